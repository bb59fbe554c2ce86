"""Tiny ONNX graphs built in code for compiler tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(path: Path, opset: int = 17, initializers_as_inputs: bool = False, seed: int = 0,
              constant_channels: int = 0, batch: int | str = "N") -> Path:
    """image [N,3,16,16] -> Conv(8) -> Relu -> Conv(8) -> Relu -> GAP -> Flatten -> Gemm(4) -> Sigmoid."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    if constant_channels:  # channels whose activation is a constant: prunable without loss by bias compensation
        w1[-constant_channels:] = 0.0
        b1[-constant_channels:] = 0.7
    w2 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 8).astype(np.float32)
    wf = rng.normal(0, 0.5, (4, 8)).astype(np.float32)
    bf = rng.normal(0, 0.1, 4).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (wf, "wf"),
                                                         (bf, "bf"))]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        # no padding: removing a constant channel with bias compensation is then exact everywhere
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 16, 16])]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "small_cnn", inputs,
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def calibration(path: Path, count: int = 16, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, image=rng.normal(0, 1, (count, 1, 3, 16, 16)).astype(np.float32).reshape(count, 3, 16, 16))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])
