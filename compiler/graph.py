"""Facts about an ONNX graph: size, parameters, FLOPs, sparsity, op types, weights by node."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler import onnxio

WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


@dataclass(frozen=True)
class GraphStats:
    size_bytes: int
    parameters: int
    flops: int  # multiply-accumulates x 2 of Conv/Gemm/MatMul at the static input shape
    sparsity: float  # fraction of exactly-zero weights in Conv/Gemm/MatMul
    op_types: tuple[str, ...]


def _shape(model: onnx.ModelProto, name: str) -> list[int] | None:
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if value.name == name:
            # a dynamic (batch) dimension counts as 1
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                    for d in value.type.tensor_type.shape.dim]
            return dims or None
    return None


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def weight_of(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
              dequantized: dict[str, str] | None = None) -> np.ndarray | None:
    """The weight initializer of a Conv/Gemm/MatMul, also behind a DequantizeLinear (QDQ models)."""
    if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
        return None
    name = node.input[1]
    name = (dequantized or {}).get(name, name)
    return numpy_helper.to_array(inits[name]) if name in inits else None


def dequantized_weights(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """DequantizeLinear output -> the quantized initializer it reads."""
    return {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits}


def _flops(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> int:
    total = 0
    dq = dequantized_weights(model, inits)
    for node in model.graph.node:
        w = weight_of(node, inits, dq)
        if w is None:
            continue
        out = _shape(model, node.output[0])
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            total += 2 * int(np.prod(out)) * int(np.prod(w.shape[1:]))
        else:
            total += 2 * int(np.prod(out)) * int(w.shape[0] if node.op_type == "MatMul" else w.shape[-1])
    return total


def stats(path: Path) -> GraphStats:
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    if path.suffix != ".onnx":
        return GraphStats(size, 0, 0, 0.0, ())
    model = onnxio.load(path)
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    inits = initializers(model)
    float_params = [numpy_helper.to_array(t) for t in inits.values() if t.data_type in (1, 10, 11)]
    quant_params = [numpy_helper.to_array(t) for t in inits.values() if t.data_type in (2, 3)]  # uint8/int8
    parameters = sum(a.size for a in float_params) + sum(a.size for a in quant_params if a.size > 1)
    dq = dequantized_weights(model, inits)
    weights = [w for n in model.graph.node if (w := weight_of(n, inits, dq)) is not None]
    total = sum(w.size for w in weights)
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    return GraphStats(size, int(parameters), _flops(model, inits), zeros / total if total else 0.0,
                      tuple(sorted({n.op_type for n in model.graph.node})))
