"""``fp16``: float16 weights and compute, float32 inputs and outputs kept (for GPUs)."""

from __future__ import annotations

from pathlib import Path

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig


class Float16Config(PassConfig):
    keep_io_types: bool = True
    # op types left in float32, besides onnxruntime's defaults; Resize's empty roi/scales inputs
    # must not be converted (onnxruntime then rejects the graph)
    op_block_list: list[str] = ["Resize"]
    node_block_list: list[str] = []


class Float16(Pass[Float16Config]):
    name = "fp16"
    Config = Float16Config
    summary = "float16 weights and activations (float32 I/O kept)"

    def run(self, model: Path, config: Float16Config, workdir: Path) -> Path:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        proto = onnxio.load(model)
        try:
            half = convert_float_to_float16(
                proto, keep_io_types=config.keep_io_types,
                op_block_list=[*DEFAULT_OP_BLOCK_LIST, *config.op_block_list],
                node_block_list=config.node_block_list or None,
            )
        except Exception as exc:
            raise PassError(f"float16 conversion failed: {type(exc).__name__}: {exc}") from exc
        return onnxio.save(half, workdir / "model.fp16.onnx")
