"""``tensorrt.prepare``: an ONNX graph TensorRT 10's parser takes, and an engine build config.

- fp16: the float32 ONNX is kept (TensorRT builds fp16 kernels from it with the FP16 flag);
- int8: explicit quantization, QDQ with symmetric int8 activations and per-channel
  symmetric int8 weights, as TensorRT requires (zero points must be 0), biases in float
  (a quantized bias is an INT32 input to DequantizeLinear, which TensorRT's parser refuses:
  only activation types are allowed there) — no calibration table needed at engine build.

The result is checked against TensorRT 10's ONNX operator support matrix
(``compiler.tensorrt_support``): what the parser would refuse fails the pass, naming each node.

``engine_config.json`` (written to ``bundle_extras/``, so it travels in the bundle) holds
what the engine build needs: precision flags, workspace, and an optimization profile for every
input (min = opt = max = the shape the device feeds, from the calibration tensors), which the
device's build uses whenever an input has a dynamic dimension. The engine itself is built on the
device (here only as a check, with ``build_engine: true``, where the ``tensorrt`` Python package
imports): engines are specific to GPU, TensorRT version and JetPack, so the bundle carries ONNX,
never a prebuilt engine. Not run on this project's CI machine, which has no GPU and cannot
install TensorRT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from agent.runtimes.tensorrt import ENGINE_CONFIG
from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.quantize_static import QuantizeStatic, QuantizeStaticConfig
from compiler.tensorrt_support import check

EXTRAS = "bundle_extras"


class TensorRTPrepareConfig(PassConfig):
    precision: Literal["fp16", "int8"] = "fp16"
    workspace_mb: Annotated[int, Field(ge=16, le=65536)] = 1024
    builder_optimization_level: Annotated[int, Field(ge=0, le=5)] = 3
    exclude_nodes: list[str] = []
    calibration: Path | None = None  # filled by the pipeline (int8)
    build_engine: bool = False  # build here too; needs the tensorrt package and a GPU


def engine_config(model: Path, config: TensorRTPrepareConfig) -> dict[str, object]:
    """Build settings; the profile of each input is the shape the device feeds (a calibration
    tensor's, where the graph leaves a dimension dynamic)."""
    proto = onnxio.load(model)
    inits = {i.name for i in proto.graph.initializer}
    fed = {}
    if config.calibration is not None:
        with np.load(config.calibration) as samples:
            fed = {name: [1, *samples[name].shape[1:]] for name in samples.files}
    shapes, dynamic = {}, []
    for value in proto.graph.input:
        if value.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        if -1 in dims:
            dynamic.append(value.name)
        given = fed.get(value.name, [])
        if len(given) == len(dims) and all(d in (-1, g) for d, g in zip(dims, given, strict=True)):
            dims = given
        shapes[value.name] = [1 if d == -1 else d for d in dims]
    return {"precision": config.precision, "fp16": True, "int8": config.precision == "int8",
            "explicit_quantization": config.precision == "int8", "workspace_mb": config.workspace_mb,
            "builder_optimization_level": config.builder_optimization_level, "dynamic_inputs": dynamic,
            "profile": {name: {"min": s, "opt": s, "max": s} for name, s in shapes.items()}}


def build_engine(model: Path, settings: dict[str, object], out: Path) -> Path:
    """Build the engine here with the agent's own builder (the device builds it the same way)."""
    from agent.errors import AgentError
    from agent.runtimes.tensorrt import build_engine as agent_build_engine

    try:
        return agent_build_engine(model, settings, out)
    except AgentError as exc:
        raise PassError(f"building a TensorRT engine needs the tensorrt Python package and an NVIDIA GPU; "
                        f"the bundle still carries the ONNX and engine_config.json for the device to build "
                        f"({exc})") from exc


class TensorRTPrepare(Pass[TensorRTPrepareConfig]):
    name = "tensorrt.prepare"
    Config = TensorRTPrepareConfig
    summary = "TensorRT-ready ONNX (fp16, or explicit-QDQ symmetric int8) + engine build config"

    def run(self, model: Path, config: TensorRTPrepareConfig, workdir: Path) -> Path:
        if config.precision == "int8":
            qconfig = QuantizeStaticConfig(format="QDQ", per_channel=True, activation_type="int8",
                                           weight_type="int8", symmetric_weights=True, symmetric_activations=True,
                                           quantize_bias=False, exclude_nodes=config.exclude_nodes,
                                           calibration=config.calibration)
            out = QuantizeStatic().run(model, qconfig, workdir)
        else:
            out = onnxio.save(onnxio.load(model), workdir / "model.onnx")
        report = check(onnxio.load(out))
        if report.problems:
            raise PassError(f"TensorRT 10's ONNX parser would refuse {len(report.problems)} node(s): "
                            + "; ".join(report.problems[:8]) + ("; ..." if len(report.problems) > 8 else ""))
        extras = workdir / EXTRAS
        extras.mkdir(exist_ok=True)
        settings = engine_config(out, config) | {"data_dependent_outputs": report.data_dependent}
        (extras / ENGINE_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        if config.build_engine:  # a check that it builds; the device builds its own (never bundled)
            build_engine(out, settings, workdir / "engine-check" / "model.engine")
        return out
