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


def shufflenet_units(path: Path, k: int = 4, seed: int = 0, opset: int = 17, units: int = 2) -> Path:
    """A stem, ``units`` ShuffleNet v2 units (default two) and a stage end, image [1,3,8,8] -> [1,2k,8,8] and [1,3,8,8].

    Each unit: Split in halves, branch Conv1x1 -> LeakyRelu -> depthwise 3x3 -> Conv1x1 -> LeakyRelu
    on the second half, Concat with the first, then the two-group channel shuffle
    (Reshape -> Transpose(0,2,1,3,4) -> Reshape). The stage end's shuffle is read by a depthwise
    Conv (-> Conv1x1) and by a Conv1x1, as in NanoDet's backbone.
    """
    rng = np.random.default_rng(seed)
    c = 2 * k
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name))
        return name

    def conv(name: str, x: str, out_ch: int, in_ch: int, group: int = 1, kernel: int = 1) -> str:
        nodes.append(helper.make_node("Conv", [x, weight(f"{name}_w", (out_ch, in_ch // group, kernel, kernel)),
                                               weight(f"{name}_b", (out_ch,))], [name], name=name, group=group,
                                      pads=[kernel // 2] * 4))
        return name

    def leaky(x: str) -> str:
        nodes.append(helper.make_node("LeakyRelu", [x], [f"{x}_act"], name=f"{x}_act", alpha=0.1))
        return f"{x}_act"

    def shuffle(name: str, a: str, b: str) -> str:
        inits.extend([numpy_helper.from_array(np.array([1, 2, k, 8, 8], np.int64), f"{name}_s5"),
                      numpy_helper.from_array(np.array([1, c, 8, 8], np.int64), f"{name}_s4")])
        nodes.extend([
            helper.make_node("Concat", [a, b], [f"{name}_cat"], name=f"{name}_cat", axis=1),
            helper.make_node("Reshape", [f"{name}_cat", f"{name}_s5"], [f"{name}_r5"], name=f"{name}_r5"),
            helper.make_node("Transpose", [f"{name}_r5"], [f"{name}_t"], name=f"{name}_t", perm=[0, 2, 1, 3, 4]),
            helper.make_node("Reshape", [f"{name}_t", f"{name}_s4"], [name], name=f"{name}_r4"),
        ])
        return name

    x = leaky(conv("stem", "image", c, 3, kernel=3))
    for u in range(units):
        inits.append(numpy_helper.from_array(np.array([k, k], np.int64), f"u{u}_halves"))
        nodes.append(helper.make_node("Split", [x, f"u{u}_halves"], [f"u{u}_x1", f"u{u}_x2"], name=f"u{u}_split",
                                      axis=1))
        h = leaky(conv(f"u{u}_pw1", f"u{u}_x2", k, k))
        h = conv(f"u{u}_dw", h, k, k, group=k, kernel=3)
        h = leaky(conv(f"u{u}_pw2", h, k, k))
        x = shuffle(f"u{u}_shuffle", f"u{u}_x1", h)
    side = conv("end_dw", x, c, c, group=c, kernel=3)
    out_a = conv("end_pw", side, c, c)
    out_b = conv("end_fpn", x, 3, c)
    graph = helper.make_graph(nodes, "shufflenet_units",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(out_a, TensorProto.FLOAT, [1, c, 8, 8]),
                               helper.make_tensor_value_info(out_b, TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def shared_params_cnn(path: Path, share: bool = True, seed: int = 0) -> Path:
    """image [N,3,16,16] -> Conv(8) -> BN -> Relu -> Conv(8) -> BN -> Relu -> Conv(8) -> Relu -> GAP -> Gemm(4).

    With ``share``, the three Convs read one bias initializer and the two BatchNorms one set of
    parameters, as the torch exporter leaves them when it de-duplicates identical folded tensors;
    without, every node has its own copy of the same values (the same function).
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)), "w2": rng.normal(0, 0.3, (8, 8, 3, 3)),
        "w3": rng.normal(0, 0.3, (8, 8, 1, 1)), "wf": rng.normal(0, 0.5, (4, 8)), "bf": rng.normal(0, 0.1, 4)}
    bias = rng.normal(0, 0.1, 8)
    bn = {"scale": rng.uniform(0.5, 1.5, 8), "shift": rng.normal(0, 0.1, 8), "mean": rng.normal(0, 0.1, 8),
          "var": rng.uniform(0.5, 1.5, 8)}

    def shared(name: str, value: np.ndarray, user: str) -> str:
        key = name if share else f"{name}_{user}"
        arrays.setdefault(key, value)
        return key

    def bn_inputs(user: str) -> list[str]:
        return [shared(f"bn_{k}", v, user) for k, v in bn.items()]

    nodes = [
        helper.make_node("Conv", ["image", "w1", shared("bias", bias, "c1")], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", *bn_inputs("bn1")], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", shared("bias", bias, "c2")], ["c2"], name="conv2", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c2", *bn_inputs("bn2")], ["n2"], name="bn2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", shared("bias", bias, "c3")], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
    ]
    return _classifier(path, "shared_params_cnn", nodes, "r3", arrays)


def _classifier(path: Path, name: str, nodes: list[onnx.NodeProto], features: str,
                arrays: dict[str, np.ndarray]) -> Path:
    """``nodes`` from image [N,3,16,16] to ``features``, then GAP -> Flatten -> Gemm(wf, bf) -> scores [N,4]."""
    nodes = [*nodes, helper.make_node("GlobalAveragePool", [features], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["scores"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tied_convs(path: Path, batchnorm: bool = True, repeats: int = 3, seed: int = 0) -> Path:
    """image [N,3,16,16] -> Conv(16, stride 2) -> Relu -> ``repeats`` x (Conv(16) -> [BN] -> Relu) -> GAP -> Gemm(4).

    The repeated Conv is one weight applied ``repeats`` times (weight tying, as the zoo's
    ``shared`` model): with ``batchnorm``, one initializer read by every application, each with
    its own BatchNorm (``cleanup`` folds them into per-application copies); without, the
    exporter's habit of storing one identical copy per application.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"w0": rng.normal(0, 0.5, (16, 3, 3, 3)), "wf": rng.normal(0, 0.5, (4, 16)),
                                     "bf": rng.normal(0, 0.1, 4)}
    tied = rng.normal(0, 0.2, (16, 16, 3, 3))
    nodes = [helper.make_node("Conv", ["image", "w0"], ["x0"], name="stem", pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["x0"], ["r0"], name="stem_relu")]
    x = "r0"
    for i in range(repeats):
        weight = "tied" if batchnorm else f"tied_copy{i}"
        arrays[weight] = tied
        nodes.append(helper.make_node("Conv", [x, weight], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        y = f"c{i}"
        if batchnorm:
            names = [f"bn{i}_{k}" for k in ("scale", "shift", "mean", "var")]
            for name, value in zip(names, (rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16),
                                           rng.normal(0, 0.1, 16), rng.uniform(0.5, 1.5, 16)), strict=True):
                arrays[name] = value
            nodes.append(helper.make_node("BatchNormalization", [y, *names], [f"n{i}"], name=f"bn{i}"))
            y = f"n{i}"
        nodes.append(helper.make_node("Relu", [y], [f"r{i + 1}"], name=f"relu{i}"))
        x = f"r{i + 1}"
    return _classifier(path, "tied_convs", nodes, x, arrays)
