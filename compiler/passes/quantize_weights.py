"""``quantize.weights``: int8 weights, float activations (weight-only quantization).

Each Conv, ConvTranspose, Gemm and MatMul weight initializer becomes symmetric int8 with one
scale per output channel, turned back into float32 by ``Cast`` and ``Mul``; activations and
compute stay float32. onnxruntime folds Cast and Mul of initializers when it loads the model
(it keeps ``DequantizeLinear`` unfolded, and would then dequantize on every run), so the file
is about as small as full int8 (weights dominate) and the speed is float's. The loss is only
the weights' rounding, and nothing needs calibration: the fallback when int8 activations cost
too much (activation outliers, HardSwish/squeeze-excitation networks).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.passes.base import Pass, PassConfig
from compiler.passes.dedupe import dedupe_initializers

# op type -> index of the weight input
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


class QuantizeWeightsConfig(PassConfig):
    min_elements: Annotated[int, Field(ge=1)] = 64  # smaller weights stay float: nothing to gain
    exclude_nodes: list[str] = []


def _channel_axis(node: onnx.NodeProto, rank: int) -> int | None:
    """The axis of the weight holding output channels (None: one scale for the tensor)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    return rank - 1 if rank >= 2 else None  # MatMul: [..., K, N]


def quantize_tensor(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along ``axis`` (or one for the tensor)."""
    if axis is None:
        peak = np.array(np.max(np.abs(w)), np.float32)
    else:
        peak = np.max(np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1), axis=1).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


class QuantizeWeights(Pass[QuantizeWeightsConfig]):
    name = "quantize.weights"
    Config = QuantizeWeightsConfig
    summary = "int8 weights (per output channel, symmetric), float activations and compute"

    def run(self, model: Path, config: QuantizeWeightsConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        graph = proto.graph
        inits = {i.name: i for i in graph.initializer}
        readers: Counter[str] = Counter(x for n in graph.node for x in n.input)
        readers.update(o.name for o in graph.output)
        axes: dict[str, set[int | None]] = {}  # weight -> the channel axis each of its weight readers wants
        excluded: set[str] = set()
        weight_reads: Counter[str] = Counter()  # reads of each tensor as a weight input
        for node in graph.node:
            index = WEIGHT_INPUT.get(node.op_type)
            if index is None or len(node.input) <= index:
                continue
            name = node.input[index]
            weight_reads[name] += 1
            init = inits.get(name)
            small = init is not None and int(np.prod(init.dims)) < config.min_elements
            if init is None or init.data_type != onnx.TensorProto.FLOAT or small:
                continue
            if node.name in config.exclude_nodes:
                excluded.add(name)
            axes.setdefault(name, set()).add(_channel_axis(node, len(init.dims)))
        # a tied weight (several Convs, one initializer) is quantized once, if every reader is a
        # weight input wanting the same axis; read by anything else, kept in float, or left as is
        chosen = {name: next(iter(wanted)) for name, wanted in axes.items()
                  if len(wanted) == 1 and name not in excluded and weight_reads[name] == readers[name]}
        if not chosen:
            return model
        dequantize = []
        for name, axis in chosen.items():
            w = numpy_helper.to_array(inits[name])
            q, scale = quantize_tensor(w, axis)
            shape = [1] * w.ndim
            if axis is not None:
                shape[axis] = -1
            graph.initializer.remove(inits[name])
            graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                      numpy_helper.from_array(scale.reshape(shape), f"{name}_scale")])
            dequantize += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"], name=f"{name}_Cast",
                                            to=onnx.TensorProto.FLOAT),
                           helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name], name=f"{name}_Mul")]
        nodes = dequantize + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        dedupe_initializers(proto)  # near-identical float copies can round to one int8 tensor
        return onnxio.save(proto, workdir / "model.weights-int8.onnx")
