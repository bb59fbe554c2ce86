"""The io section of a manifest, from a compiled model file and the model description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from compiler import onnxio
from compiler.description import ModelDescription
from compiler.errors import ModelLoadError
from compiler.passes.fold_normalize import recorded_preprocessing
from contract.manifest import IOSpec, Layout, Preprocessing, Quantization, TensorSpec

_ONNX_TYPES: dict[int, str] = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32",
               onnx.TensorProto.INT64: "int64"}


def onnx_dtype(elem_type: int) -> str:
    """The numpy name of an ONNX element type (float32 for types a manifest cannot name)."""
    return _ONNX_TYPES.get(elem_type, "float32")


def _spec(value: onnx.ValueInfoProto, layout: Layout | None = None) -> TensorSpec:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    dtype: Any = onnx_dtype(t.elem_type)
    return TensorSpec(name=value.name, shape=dims, dtype=dtype, layout=layout)


def _onnx_io(path: Path, description: ModelDescription) -> IOSpec:
    model = onnxio.load(path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if description.input.name not in names:
        raise ModelLoadError(f"the description names input {description.input.name!r}, the model has {names}")
    first = next(i for i in inputs if i.name == description.input.name)
    # a model that takes raw pixels (fold.normalize) says so in its metadata
    folded = recorded_preprocessing(model)
    pre = description.preprocessing
    if folded:
        pre = Preprocessing.model_validate({**pre.model_dump(), **folded})
    return IOSpec(inputs=[_spec(first, description.input.layout)], outputs=[_spec(o) for o in model.graph.output],
                  preprocessing=pre, task=description.task, labels=description.labels,
                  postprocessor=description.postprocessor)


def _tflite_io(path: Path, description: ModelDescription) -> IOSpec:
    from agent.runtimes.litert import LiteRTRuntime

    runtime = LiteRTRuntime(path)
    (inp,) = runtime.interpreter.get_input_details()
    scale, zero = inp["quantization"]
    dtype = str(inp["dtype"].__name__)
    pre = description.preprocessing.model_copy(update={
        "layout": Layout.NHWC, "dtype": dtype,
        "quantization": Quantization(scale=scale, zero_point=zero) if scale else None})
    tensors = [TensorSpec(name=d["name"], shape=[int(x) for x in d["shape"]], dtype=str(d["dtype"].__name__),
                          layout=None) for d in runtime.interpreter.get_output_details()]
    return IOSpec(inputs=[TensorSpec(name=inp["name"], shape=[int(x) for x in inp["shape"]], dtype=dtype,
                                     layout=Layout.NHWC)],
                  outputs=tensors, preprocessing=pre, task=description.task, labels=description.labels,
                  postprocessor=description.postprocessor)


def io_for(path: Path, description: ModelDescription) -> IOSpec:
    return _tflite_io(path, description) if path.suffix == ".tflite" else _onnx_io(path, description)
