"""``tensorrt.prepare``: a TensorRT-friendly ONNX and an engine build config.

- fp16: the float32 ONNX is kept (TensorRT builds fp16 kernels from it with the FP16 flag);
- int8: explicit quantization, QDQ with symmetric int8 activations and per-channel
  symmetric int8 weights, as TensorRT requires (zero points must be 0) — no calibration
  table needed at engine build.

``engine_config.json`` (written to ``bundle_extras/``, so it travels in the bundle) holds
what the engine build needs: precision flags, workspace, optimisation profile shapes. The
engine itself is built on the device (or here with ``build_engine: true`` where the
``tensorrt`` Python package imports): engines are specific to GPU, TensorRT version and
JetPack, so the bundle carries ONNX, never a prebuilt engine. Not run on this project's CI
machine, which has no GPU and cannot install TensorRT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from agent.runtimes.tensorrt import ENGINE_CONFIG
from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.quantize_static import QuantizeStatic, QuantizeStaticConfig

EXTRAS = "bundle_extras"


class TensorRTPrepareConfig(PassConfig):
    precision: Literal["fp16", "int8"] = "fp16"
    workspace_mb: Annotated[int, Field(ge=16, le=65536)] = 1024
    builder_optimization_level: Annotated[int, Field(ge=0, le=5)] = 3
    exclude_nodes: list[str] = []
    calibration: Path | None = None  # filled by the pipeline (int8)
    build_engine: bool = False  # build here too; needs the tensorrt package and a GPU


def engine_config(model: Path, config: TensorRTPrepareConfig) -> dict[str, object]:
    proto = onnxio.load(model)
    inits = {i.name for i in proto.graph.initializer}
    shapes = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
              for i in proto.graph.input if i.name not in inits}
    return {"precision": config.precision, "fp16": True, "int8": config.precision == "int8",
            "explicit_quantization": config.precision == "int8", "workspace_mb": config.workspace_mb,
            "builder_optimization_level": config.builder_optimization_level,
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
                                           exclude_nodes=config.exclude_nodes, calibration=config.calibration)
            out = QuantizeStatic().run(model, qconfig, workdir)
        else:
            out = onnxio.save(onnxio.load(model), workdir / "model.onnx")
        extras = workdir / EXTRAS
        extras.mkdir(exist_ok=True)
        settings = engine_config(out, config)
        (extras / ENGINE_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        if config.build_engine:
            build_engine(out, settings, extras / "model.engine")
        return out
