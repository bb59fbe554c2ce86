"""``fp16``: float16 weights and compute, float32 inputs and outputs kept (for GPUs).

``weights_only: true``: float16 weights read through a ``Cast`` to float32, compute in float32:
half the file size with float32 speed on CPUs without float16 arithmetic (Cortex-A72, x86),
where float16 compute would be emulated and slower than float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.dedupe import dedupe_initializers


class Float16Config(PassConfig):
    keep_io_types: bool = True
    # op types left in float32, besides onnxruntime's defaults; Resize's empty roi/scales inputs
    # must not be converted (onnxruntime then rejects the graph)
    op_block_list: list[str] = ["Resize"]
    node_block_list: list[str] = []
    weights_only: bool = False  # float16 storage, float32 compute
    min_elements: Annotated[int, Field(ge=1)] = 64  # weights_only: smaller initializers stay float32


def weights_to_float16(proto: onnx.ModelProto, min_elements: int) -> int:
    """Float32 initializers of at least ``min_elements`` stored as float16 and cast back on load."""
    graph = proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}_Cast",
                                      to=onnx.TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


class Float16(Pass[Float16Config]):
    name = "fp16"
    Config = Float16Config
    summary = "float16 weights and activations (float32 I/O kept); or float16 weights only"

    def run(self, model: Path, config: Float16Config, workdir: Path) -> Path:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        proto = onnxio.load(model)
        if config.weights_only:
            if not weights_to_float16(proto, config.min_elements):
                return model
            dedupe_initializers(proto)  # float16 can make near-identical copies identical
            return onnxio.save(proto, workdir / "model.fp16-weights.onnx")
        try:
            half = convert_float_to_float16(
                proto, keep_io_types=config.keep_io_types,
                op_block_list=[*DEFAULT_OP_BLOCK_LIST, *config.op_block_list],
                node_block_list=config.node_block_list or None,
            )
        except Exception as exc:
            raise PassError(f"float16 conversion failed: {type(exc).__name__}: {exc}") from exc
        dedupe_initializers(half)
        return onnxio.save(half, workdir / "model.fp16.onnx")
