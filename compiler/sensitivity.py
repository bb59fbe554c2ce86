"""Per-node quantization sensitivity: which nodes lose the most by being int8.

Both models run on a few calibration samples with every compute node's output exposed.
A node's error is 1 - cosine similarity between its float and quantized outputs; its
*local* error subtracts the worst error arriving at its inputs, so a node is blamed only for
the error it adds, not for what it inherited.

``Screen`` scores whole candidate models the same way on their final outputs: cheap enough to
rank a dozen candidates before spending an evaluation on one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from agent.model import LoadedModel
from compiler import onnxio
from compiler.passes.calibration import iterate, load_samples

QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "LeakyRelu", "Relu", "Sigmoid",
               "Resize", "MaxPool", "AveragePool", "GlobalAveragePool", "Clip", "HardSigmoid", "HardSwish"}


def _session_with_outputs(proto: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        return 0.0 if np.allclose(a, b) else 1.0
    return float(1.0 - np.dot(a, b) / norm)


def node_sensitivity(float_model: Path, quant_model: Path, calibration: Path, samples: int = 8) -> list[tuple[str,
                                                                                                             float]]:
    """(node name, local error) for the float model's quantizable nodes, most sensitive first."""
    proto = onnxio.load(float_model)
    nodes = [n for n in proto.graph.node if n.op_type in QUANTIZABLE and n.name and n.output]
    quant = onnxio.load(quant_model)
    available = {o for n in quant.graph.node for o in n.output}
    nodes = [n for n in nodes if n.output[0] in available]
    names = [n.output[0] for n in nodes]
    f_sess = _session_with_outputs(proto, names)
    q_sess = _session_with_outputs(quant, names)
    errors = np.zeros(len(names))
    for i, sample in enumerate(iterate(load_samples(calibration, "sensitivity analysis"))):
        if i >= samples:
            break
        f_out = f_sess.run(names, sample)
        q_out = q_sess.run(names, sample)
        errors += [_error(a, b) for a, b in zip(f_out, q_out, strict=True)]
    errors /= max(1, min(samples, i + 1))
    by_output = dict(zip(names, errors, strict=True))
    local = []
    for node, err in zip(nodes, errors, strict=True):
        inherited = max((by_output.get(x, 0.0) for x in node.input), default=0.0)
        local.append((node.name, max(0.0, float(err - inherited))))
    return sorted(local, key=lambda x: -x[1])


class Screen:
    """A reference model's raw outputs on a few calibration frames, to screen candidates cheaply.

    ``error``: mean (1 - cosine similarity) of a candidate's outputs against the reference's, a
    stand-in for fidelity that costs a few inferences instead of a whole evaluation.
    ``max_difference``: the largest output difference relative to the output's range, to check
    that a pass meant to be exact in float changed nothing.
    """

    def __init__(self, reference: LoadedModel, frames: Sequence[np.ndarray]) -> None:
        self.frames = list(frames)
        self.outputs = [self._run(reference, frame) for frame in self.frames]

    @staticmethod
    def _run(model: LoadedModel, frame: np.ndarray) -> list[np.ndarray]:
        x, _ = model.prepare(frame)
        return [np.asarray(o, np.float64) for o in model.run(x)]

    def error(self, candidate: LoadedModel) -> float:
        errors = [_error(a, b) for frame, ref in zip(self.frames, self.outputs, strict=True)
                  for a, b in zip(ref, self._run(candidate, frame), strict=True)]
        return float(np.mean(errors))

    def max_difference(self, candidate: LoadedModel) -> float:
        worst = 0.0
        for frame, ref in zip(self.frames, self.outputs, strict=True):
            got = self._run(candidate, frame)
            if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(ref, got, strict=True)):
                return float("inf")
            for a, b in zip(ref, got, strict=True):
                scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-6)
                worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
        return worst
