"""What a compiled model actually computes in: read from the graph, not from the target's name.

An "int8" bundle whose every Conv stayed in float is float; a bundle with int8 weights and
float activations is not full int8. Each compute node (Conv, ConvTranspose, Gemm, MatMul;
in TFLite CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL) is
classified by the types of its weight and its activation input, and the model is labelled
by what its compute nodes are: ``int8``, ``int8 weights, float activations``, ``fp16``, ...,
or ``mixed`` with the counts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from compiler import onnxio

COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
INT8_OPS = {"QLinearConv": "int8", "QLinearMatMul": "int8", "ConvInteger": "int8 dynamic",
            "MatMulInteger": "int8 dynamic", "DynamicQuantizeMatMul": "int8 dynamic",
            "MatMulIntegerToFloat": "int8 dynamic"}
TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
_INTEGER = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
            onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
KINDS = {  # kind -> how a model made only of it is labelled
    "int8": "int8",
    "int8 dynamic": "int8 weights, activations quantized at run time",
    "int8 weights": "int8 weights, float activations",
    "int8 weights int16 act": "int8 weights, int16 activations",
    "fp16": "fp16",
    "fp16 weights": "fp16 weights, float32 compute",
    "float32": "float32",
}


@dataclass(frozen=True)
class Precision:
    counts: dict[str, int]  # kind -> compute nodes of that kind

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def int8_fraction(self) -> float:
        """Compute nodes with int8 weights and int8 activations (static or dynamic), of all."""
        return (self.counts.get("int8", 0) + self.counts.get("int8 dynamic", 0)) / max(1, self.total)

    @property
    def label(self) -> str:
        present = {k: v for k, v in self.counts.items() if v}
        if not present:
            return "float32 (no Conv/Gemm/MatMul)"
        if len(present) == 1:
            return KINDS[next(iter(present))]
        parts = ", ".join(f"{v} {k}" for k, v in sorted(present.items(), key=lambda kv: -kv[1]))
        return f"mixed: {parts} of {self.total} compute nodes"


def _onnx(model: Path) -> Precision:
    proto = onnxio.load(model)
    graph = proto.graph
    inits = {i.name: i.data_type for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def source(name: str) -> tuple[str, int | None]:
        """(how a tensor is made, the element type of the initializer it comes from)."""
        node = producer.get(name)
        if node is None:
            return ("initializer" if name in inits else "input"), inits.get(name)
        if node.op_type in ("DequantizeLinear", "Cast") and node.input:
            return node.op_type, source(node.input[0])[1]
        if node.op_type == "Mul":  # int8 weights stored as Cast(int8) * scale (quantize.weights)
            for x in node.input:
                how, kind = source(x)
                if how == "Cast" and kind in _INTEGER:
                    return "DequantizeLinear", kind
        return node.op_type, None

    counts: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in INT8_OPS:
            counts[INT8_OPS[node.op_type]] += 1
            continue
        if node.op_type not in COMPUTE or len(node.input) < 2:
            continue
        w_how, w_type = source(node.input[1])
        a_how, _ = source(node.input[0])
        if w_how == "DequantizeLinear" and w_type in _INTEGER:
            counts["int8" if a_how == "DequantizeLinear" else "int8 weights"] += 1
        elif w_type == onnx.TensorProto.FLOAT16:
            counts["fp16 weights" if w_how == "Cast" else "fp16"] += 1
        else:
            counts["float32"] += 1
    return Precision(dict(counts))


def _tflite(model: Path) -> Precision:
    from agent.runtimes.litert import LiteRTRuntime

    interpreter = LiteRTRuntime(model).interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only way to read op inputs
    producer = {o: op for op in ops for o in op["outputs"]}
    counts: Counter[str] = Counter()
    for op in ops:
        if op["op_name"] not in TFLITE_COMPUTE or len(op["inputs"]) < 2:
            continue
        # TRANSPOSE_CONV's inputs are (output shape, weights, activation)
        act = tensors[op["inputs"][2 if op["op_name"] == "TRANSPOSE_CONV" else 0]]["dtype"].__name__
        weight = op["inputs"][1]
        w_type = tensors[weight]["dtype"].__name__
        made = producer.get(weight)
        if made is not None and made["op_name"] == "DEQUANTIZE" and made["inputs"]:
            w_type = tensors[made["inputs"][0]]["dtype"].__name__
        if w_type == "int8":
            kind = {"int8": "int8", "int16": "int8 weights int16 act"}.get(act, "int8 weights")
        elif w_type == "float16":
            kind = "fp16 weights"
        else:
            kind = "float32"
        counts[kind] += 1
    return Precision(dict(counts))


def describe(model: Path) -> Precision:
    """What ``model`` (.onnx or .tflite) computes in. A TensorRT bundle's float32 ONNX built as fp16
    (``engine_config.json`` beside it says so) counts as fp16."""
    if model.suffix == ".tflite":
        return _tflite(model)
    found = _onnx(model)
    engine = model.parent / "bundle_extras" / "engine_config.json"
    if engine.exists() and set(found.counts) == {"float32"}:
        settings = json.loads(engine.read_text())
        if settings.get("fp16") and not settings.get("int8"):
            return Precision({"fp16": found.counts["float32"]})
    return found
