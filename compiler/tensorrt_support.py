"""What TensorRT 10's ONNX parser accepts, checked on the ONNX graph a Jetson bundle carries.

TensorRT cannot be installed on the build host (no NVIDIA GPU), so a Jetson bundle is checked
statically against the operator support matrix of onnx-tensorrt (``docs/operators.md`` of the
TensorRT 10 releases: supported ops and the tensor types each takes) and the rules of its
quantization guide: INT8 is a *quantized type* that exists only between ``QuantizeLinear`` and
``DequantizeLinear`` (so a ``DequantizeLinear`` reads INT8, never the INT32 of a quantized bias:
"only activation types allowed as input to this layer"), zero points are 0, and UINT8 appears
only as a network input or output. Outputs whose shape depends on the data (``NonZero``,
``NonMaxSuppression``) are reported too: the agent's TensorRT runtime gives them an output
allocator. Opsets 9 to 20 (TensorRT 10.0's range; later 10.x parse more).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

FLOATS = frozenset({"FP32", "FP16", "BF16"})
INTS = frozenset({"INT32", "INT64"})
_F, _FI, _FIB = FLOATS, FLOATS | INTS, FLOATS | INTS | {"BOOL"}

# op -> the types its data input (input 0) may have; from onnx-tensorrt docs/operators.md (TensorRT 10)
SUPPORTED: dict[str, frozenset[str]] = {
    **dict.fromkeys(["Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization",
                     "Ceil", "Celu", "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum",
                     "Elu", "Erf", "Exp", "Floor", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool",
                     "GRU", "HardSigmoid", "HardSwish", "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf",
                     "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "LRN", "LSTM", "LpNormalization",
                     "LpPool", "MatMul", "MaxPool", "MeanVarianceNormalization", "GroupNormalization",
                     "ParametricSoftplus", "PRelu", "RandomNormal", "RandomNormalLike", "RandomUniform",
                     "RandomUniformLike", "Reciprocal", "Resize", "RNN", "Round", "ScaledTanh", "Scan", "Selu",
                     "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
                     "ThresholdedRelu", "Upsample", "Mish", "GridSample", "RoiAlign", "DeformConv"], _F),
    **dict.fromkeys(["Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual",
                     "IsNaN", "Less", "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "Pad", "Pow",
                     "Range", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Scatter",
                     "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth", "Sub", "Sum", "TopK"], _FI),
    **dict.fromkeys(["Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten", "Gather",
                     "GatherElements", "GatherND", "Identity", "If", "Loop", "OneHot", "Reshape", "ReverseSequence",
                     "Shape", "Size", "Slice", "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze",
                     "Where"], _FIB),
    **dict.fromkeys(["And", "Or", "Xor", "Not"], frozenset({"BOOL"})),
    "Cast": _FIB | {"UINT8"}, "CastLike": _FIB | {"UINT8"},
    "NonZero": _F, "NonMaxSuppression": _F,
    "Gelu": _FI | {"INT8"},
    "QuantizeLinear": _F,
    "DequantizeLinear": frozenset({"INT8", "FP8", "INT4"}),
}
DATA_DEPENDENT = frozenset({"NonZero", "NonMaxSuppression"})
RESIZE_COORDINATES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                "align_corners"})
OPSETS = (9, 20)
_TYPE_NAMES = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.BFLOAT16: "BF16",
               onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64", onnx.TensorProto.BOOL: "BOOL",
               onnx.TensorProto.INT8: "INT8", onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.DOUBLE: "DOUBLE"}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # what the parser would refuse
    data_dependent: list[str] = field(default_factory=list)  # outputs sized by the data: need an output allocator


def _types(model: onnx.ModelProto) -> dict[str, str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    types = {v.name: _TYPE_NAMES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))
             for v in values}
    types.update({i.name: _TYPE_NAMES.get(i.data_type, str(i.data_type)) for i in model.graph.initializer})
    return types


def _attr(node: onnx.NodeProto, name: str, default: str) -> str:
    found = next((a for a in node.attribute if a.name == name), None)
    return found.s.decode() if found is not None else default


def check(model: onnx.ModelProto) -> Report:
    """What TensorRT 10's ONNX parser would refuse in ``model``, and its data-dependent outputs."""
    report = Report()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSETS[0] <= opset <= OPSETS[1]:
        report.problems.append(f"opset {opset} is outside TensorRT 10's {OPSETS[0]}..{OPSETS[1]}")
    types = _types(model)
    inits = {i.name: i for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in inits and types.get(value.name) == "INT8":
            report.problems.append(f"network input/output {value.name} is INT8: TensorRT takes INT8 only inside "
                                   "the network, between QuantizeLinear and DequantizeLinear")
    for node in model.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]}"
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"{where}: domain {node.domain} is not parsed by TensorRT (it needs a plugin)")
            continue
        allowed = SUPPORTED.get(node.op_type)
        if allowed is None:
            report.problems.append(f"{where}: not in TensorRT 10's ONNX operator support matrix")
            continue
        first = types.get(node.input[0]) if node.input and node.input[0] else None
        if first is not None and first not in allowed:
            why = " (a quantized bias: TensorRT accepts only activation types here)" \
                if node.op_type == "DequantizeLinear" and first == "INT32" else ""
            report.problems.append(f"{where}: input {node.input[0]} is {first}, TensorRT takes "
                                   f"{', '.join(sorted(allowed))}{why}")
        if first == "UINT8" and node.op_type != "Cast":
            report.problems.append(f"{where}: UINT8 input {node.input[0]}; TensorRT has UINT8 only at network I/O")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zero = inits.get(node.input[2])
            if zero is None or np.any(numpy_helper.to_array(zero)):
                report.problems.append(f"{where}: zero point {node.input[2]} must be a constant 0 for TensorRT")
        if node.op_type == "Resize" and (
                _attr(node, "coordinate_transformation_mode", "half_pixel") not in RESIZE_COORDINATES
                or _attr(node, "mode", "nearest") not in ("nearest", "linear")):
            report.problems.append(f"{where}: mode {_attr(node, 'mode', 'nearest')} / coordinate transformation "
                                   f"{_attr(node, 'coordinate_transformation_mode', 'half_pixel')} is not supported")
        if node.op_type in DATA_DEPENDENT:
            report.data_dependent.append(f"{where} ({', '.join(o for o in node.output if o)})")
    return report
