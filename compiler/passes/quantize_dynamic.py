"""``quantize.dynamic``: int8 weights, activations quantized at run time (MatMul/Gemm-heavy models)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from onnxruntime.quantization import QuantType, quantize_dynamic

from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.dedupe import dedupe_file


class QuantizeDynamicConfig(PassConfig):
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"
    op_types: list[str] | None = ["MatMul", "Gemm"]
    exclude_nodes: list[str] = []


class QuantizeDynamic(Pass[QuantizeDynamicConfig]):
    name = "quantize.dynamic"
    Config = QuantizeDynamicConfig
    summary = "dynamic int8 (weights int8, activations quantized at run time)"

    def run(self, model: Path, config: QuantizeDynamicConfig, workdir: Path) -> Path:
        out = workdir / "model.dynamic.onnx"
        try:
            quantize_dynamic(
                str(model), str(out), op_types_to_quantize=config.op_types, per_channel=config.per_channel,
                weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
                nodes_to_exclude=list(config.exclude_nodes),
            )
        except Exception as exc:
            raise PassError(f"dynamic quantization failed: {type(exc).__name__}: {exc}") from exc
        dedupe_file(out)
        return out
