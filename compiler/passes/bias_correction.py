"""Empirical bias (and scale) correction of a QDQ model, layer by layer.

int8 rounding shifts the mean, and slightly the spread, of each Conv's output channels, and
the shifts pile up through the network. Walking the Convs in graph order, each channel's
output statistics in the quantized model (with every earlier correction already applied)
are matched to the float model's on calibration inputs: the spread through the per-channel
weight scale, the mean through the (float) bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from compiler import onnxio
from compiler.passes.calibration import iterate, load_samples


def _session(model: onnx.ModelProto, outputs: list[str]) -> ort.InferenceSession:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs if n not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _channel_stats(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.concatenate([np.moveaxis(v, 1, 0).reshape(v.shape[1], -1) for v in values], axis=1)
    return flat.mean(axis=1), flat.std(axis=1)


def _float_twin(float_model: onnx.ModelProto, name: str) -> str:
    """The float tensor matching a quantized Conv's output. The quantizer folds a Relu/Clip that
    follows a Conv into the Conv's output quantization and gives the Conv the activation's
    output name; the float model's tensor of that name is then post-activation, and the
    pre-activation tensor (the activation's input) is the one to compare with."""
    producer = next((n for n in float_model.graph.node if name in n.output), None)
    if producer is not None and producer.op_type in ("Relu", "Clip"):
        return str(producer.input[0])
    return name


def correct(float_model: Path, quant_model: Path, calibration: Path, samples: int, scale: bool,
            max_ratio: float = 1.25) -> None:
    """Rewrite ``quant_model`` in place with corrected biases (and weight scales)."""
    fproto, qproto = onnxio.load(float_model), onnxio.load(quant_model)
    inits = {i.name: i for i in qproto.graph.initializer}
    producer = {o: n for n in qproto.graph.node for o in n.output}
    convs = [n for n in qproto.graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in inits]
    names = [c.output[0] for c in convs]
    float_names = [_float_twin(fproto, name) for name in names]
    data = [s for _, s in zip(range(samples), iterate(load_samples(calibration, "bias correction")), strict=False)]
    reference = _session(fproto, float_names)
    per_sample = [reference.run(float_names, s) for s in data]
    targets = {name: _channel_stats([outs[i] for outs in per_sample]) for i, name in enumerate(names)}
    del per_sample
    for conv in convs:
        name = conv.output[0]
        session = _session(qproto, [name])
        mean_q, std_q = _channel_stats([session.run([name], s)[0] for s in data])
        mean_f, std_f = targets[name]
        bias = numpy_helper.to_array(inits[conv.input[2]])
        ratio = np.ones_like(mean_q)
        dq = producer.get(conv.input[1])
        if scale and dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in inits:
            w_scale = numpy_helper.to_array(inits[dq.input[1]])
            if w_scale.shape == mean_q.shape:
                ratio = np.clip(std_f / np.maximum(std_q, 1e-6), 1 / max_ratio, max_ratio)
                inits[dq.input[1]].CopyFrom(numpy_helper.from_array((w_scale * ratio).astype(w_scale.dtype),
                                                                    dq.input[1]))
        corrected = mean_f - ratio * (mean_q - bias)
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array(corrected.astype(bias.dtype), conv.input[2]))
    onnxio.save(qproto, quant_model)
