"""The training script end to end on a tiny budget (needs the ``train`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from examples.fridge import train  # noqa: E402


def test_tiny_training_run_exports_working_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, labels = train.render(seed=11, count=96, workers=1)
    assert images.shape == (96, 128, 128, 3) and labels.shape == (96, 8)
    model = train.FridgeNet(width=4)
    train.train(model, images, labels, epochs=1, batch=32, lr=1e-3)
    path = tmp_path / "m.onnx"
    train.export(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = train.to_tensor(images[:3]).numpy()
    (onnx_out,) = session.run(None, {"image": x})
    torch_out = train.predict(model, images[:3])
    assert onnx_out.shape == (3, 8)
    assert np.allclose(onnx_out, torch_out, atol=1e-5)


def test_f1_and_thresholds() -> None:
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6]])
    truth = np.array([[1, 0], [1, 1], [0, 0]], np.float32)
    f1 = train.f1_per_label(probs, truth, np.array([0.5, 0.5]))
    assert f1.tolist() == [1.0, pytest.approx(2 / 3)]
    tuned = train.tune_thresholds(probs, truth)
    assert train.f1_per_label(probs, truth, tuned).tolist() == [1.0, 1.0]
