from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import postprocess
from agent.errors import ModelLoadFailed, RuntimeUnavailableError
from agent.preprocess import preprocess
from agent.runtimes import open_runtime
from contract.manifest import Layout, Preprocessing
from examples.fridge import MODEL_FILE

PHOTO = "Packages/Juice/God-Morgon-Orange-Red-Grapefruit-Juice/God-Morgon-Orange-Red-Grapefruit-Juice_006.jpg"


def test_onnxruntime_runs_the_demo_model() -> None:
    runtime = open_runtime("onnxruntime", MODEL_FILE, 1)
    assert runtime.input_names == ["image"] and runtime.output_names == ["scores"]
    (out,) = runtime.run({"image": np.zeros((1, 3, 128, 128), np.float32)})
    assert out.shape == (1, 8)


def test_bad_model_and_unknown_runtime(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadFailed, match=r"onnxruntime cannot load bad\.onnx"):
        open_runtime("onnxruntime", bad)
    with pytest.raises(RuntimeUnavailableError, match="tensorrt"):
        open_runtime("tensorrt", MODEL_FILE)
    with pytest.raises(ValueError, match="openvino"):
        open_runtime("openvino", MODEL_FILE)


def test_litert_runs_a_real_int8_tflite_classifier(shared_data: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")
    folder = shared_data / "mobilenet_tflite"
    labels = (folder / "imagenet_labels.txt").read_text().splitlines()
    runtime = open_runtime("litert", folder / "mobilenet_v2_1.0_224_quant.tflite", 2)
    spec = Preprocessing(resize="resize", width=224, height=224, color="RGB", layout=Layout.NHWC, dtype="uint8")
    x, place = preprocess(cv2.imread(str(shared_data / "grocery" / "val" / PHOTO)), spec)
    assert x.dtype == np.uint8 and x.shape == (1, 224, 224, 3)
    (scores,) = runtime.run({runtime.input_names[0]: x})
    assert scores.dtype == np.float32 and 0.95 <= float(scores.sum()) <= 1.05  # dequantized probabilities (1/256 steps)
    best = postprocess.get("topk")([scores], labels, {"k": 1}, place).detections[0]
    assert best.label.startswith("refrigerator") and best.score > 0.6
