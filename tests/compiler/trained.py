"""A small classifier trained here, in seconds, whose int8 misses the budget for a real reason.

Photos: four classes, each a blend of its own colour with one of the others (the blend weight
varies, so some photos sit near a class boundary), with texture, brightness changes and noise.
Model: Conv 3x3 -> Relu -> Conv 3x3 -> Relu -> GlobalAveragePool -> Gemm; the Convs are fixed
random filters, the Gemm is trained by softmax regression on the pooled features. One channel
of the second Conv is an *activation outlier*: a constant 100 where the other channels stay
within a few units (a pattern of real networks, e.g. HardSwish/squeeze-excitation MobileNets).
Its Gemm weight is zero, so float predictions do not depend on it, but one uint8 range per
tensor must cover it: int8 activations then keep only a handful of levels for the features
that matter, and near-boundary photos flip. No set of nodes kept in float short of all of them
removes the outlier's range from the tensor the classifier reads; float activations do.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

LABELS = ["red", "green", "blue", "yellow"]
COLOURS = np.array([[40, 40, 200], [40, 190, 40], [200, 60, 40], [30, 200, 220]], np.float32)  # BGR
SIZE = 32
DESCRIPTION = f"""schema: coldchain.model-description/v1
name: outlier-classifier
summary: four colour classes; one Conv channel is an activation outlier
task: classification
input: {{name: image, layout: NCHW}}
preprocessing: {{resize: resize, width: {SIZE}, height: {SIZE}, color: RGB, mean: [127.5, 127.5, 127.5],
                std: [64.0, 64.0, 64.0], layout: NCHW, dtype: float32}}
labels: [{", ".join(LABELS)}]
postprocessor: {{name: topk, params: {{k: 1, softmax: true}}}}
"""


def write_photos(folder: Path, count: int, seed: int) -> np.ndarray:
    """``count`` JPEG photos and their labels.csv; the label indices."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, len(LABELS), count)
    rows = ["file,label"]
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32)
    for i, label in enumerate(labels):
        other = (label + rng.integers(1, len(LABELS))) % len(LABELS)
        weight = rng.uniform(0.5, 0.9)  # the own colour's share
        texture = np.sin(xx * rng.uniform(0.1, 0.6) + yy * rng.uniform(0.1, 0.6) + rng.uniform(0, 6))[..., None]
        colour = weight * COLOURS[label] + (1 - weight) * COLOURS[other]
        image = colour * rng.uniform(0.6, 1.3) + 30 * texture + rng.normal(0, 18, (48, 48, 3))
        cv2.imwrite(str(folder / f"photo_{i:04d}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
        rows.append(f"photo_{i:04d}.jpg,{LABELS[label]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return labels


def _inputs(folder: Path) -> np.ndarray:
    frames = [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))]
    rgb = [cv2.cvtColor(cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB) for f in frames]
    return ((np.stack(rgb).astype(np.float32) - 127.5) / 64.0).transpose(0, 3, 1, 2)


def _graph(convs: list[tuple[np.ndarray, np.ndarray]], head: tuple[np.ndarray, np.ndarray] | None) -> onnx.ModelProto:
    inits, nodes, x = [], [], "image"
    for i, (w, b) in enumerate(convs, 1):
        inits += [numpy_helper.from_array(w, f"conv{i}_w"), numpy_helper.from_array(b, f"conv{i}_b")]
        nodes += [helper.make_node("Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["features"], name="flatten")]
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, convs[-1][0].shape[0]])
    if head is not None:
        inits += [numpy_helper.from_array(head[0], "fc_w"), numpy_helper.from_array(head[1], "fc_b")]
        nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(LABELS)])
    graph = helper.make_graph(nodes, "outlier_classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def train(root: Path, seed: int = 0) -> tuple[Path, Path, Path, Path]:
    """Photos (training, calibration, evaluation) and the trained model; returns (model, description,
    calibration folder, evaluation folder)."""
    rng = np.random.default_rng(seed)
    labels = write_photos(root / "train", 400, seed + 1)
    conv1 = (rng.normal(0, 0.35, (16, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32))
    conv2 = (rng.normal(0, 0.1, (48, 16, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 48).astype(np.float32))
    conv2[0][-1], conv2[1][-1] = 0.0, 100.0  # the activation outlier: a constant channel
    features_model = _graph([conv1, conv2], None)
    session = ort.InferenceSession(features_model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _inputs(root / "train")
    feats = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    mu, sigma = feats.mean(0), feats.std(0)
    sigma[sigma < 1e-6] = np.inf  # the constant channel gets no weight
    z = (feats - mu) / sigma
    w = np.zeros((len(LABELS), z.shape[1]), np.float64)
    b = np.zeros(len(LABELS))
    onehot = np.eye(len(LABELS))[labels]
    for _ in range(600):  # softmax regression, full-batch gradient descent
        logits = z @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * ((p - onehot).T @ z / len(z) + 1e-3 * w)
        b -= 0.5 * (p - onehot).mean(0)
    fc_w = (w / sigma).astype(np.float32)
    fc_b = (b - (w * (mu / sigma)).sum(1)).astype(np.float32)
    model = root / "outlier_classifier.onnx"
    onnx.save(_graph([conv1, conv2], (fc_w, fc_b)), str(model))
    write_photos(root / "calibration", 60, seed + 2)
    write_photos(root / "evaluation", 200, seed + 3)
    description = root / "model.yaml"
    description.write_text(DESCRIPTION)
    return model, description, root / "calibration", root / "evaluation"
