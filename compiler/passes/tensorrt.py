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

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.quantize_static import QuantizeStatic, QuantizeStaticConfig

EXTRAS = "bundle_extras"
ENGINE_CONFIG = "engine_config.json"


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
    """Build a serialized TensorRT engine (TensorRT's documented Python API); needs tensorrt."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise PassError("building a TensorRT engine needs the tensorrt Python package and an NVIDIA GPU; "
                        "the bundle still carries the ONNX and engine_config.json for the device to build") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PassError(f"TensorRT cannot parse {model.name}: {errors}")
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_mb"]) << 20)  # type: ignore[call-overload]
    cfg.builder_optimization_level = int(settings["builder_optimization_level"])  # type: ignore[call-overload]
    if settings.get("fp16"):
        cfg.set_flag(trt.BuilderFlag.FP16)
    if settings.get("int8"):
        cfg.set_flag(trt.BuilderFlag.INT8)
    engine = builder.build_serialized_network(network, cfg)
    if engine is None:
        raise PassError(f"TensorRT failed to build an engine from {model.name}")
    out.write_bytes(bytes(engine))
    return out


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
