"""A PyTorch model registered in MLflow is exported to ONNX at intake (needs the train extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from compiler import intake
from compiler.registry import DESCRIPTION_TAG
from examples.fridge import DESCRIPTION_FILE

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
pytestmark = pytest.mark.integration


def test_pytorch_flavor_is_exported(tmp_path: Path) -> None:
    import mlflow

    from examples.fridge.train import FridgeNet

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # earlier tests in this process may have pointed the registry elsewhere
    experiment = mlflow.create_experiment("pt", artifact_location=(tmp_path / "art").as_uri())
    torch.manual_seed(0)
    model = FridgeNet(width=4).eval()
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pytorch.log_model(model, name="model", registered_model_name="fridge-pt",
                                        input_example=np.zeros((1, 3, 128, 128), np.float32))
    mlflow.MlflowClient().set_model_version_tag("fridge-pt", str(info.registered_model_version), DESCRIPTION_TAG,
                                                DESCRIPTION_FILE.read_text())
    source = intake.resolve("models:/fridge-pt/1", None, tmp_path / "work", uri, 17)
    assert source.path.suffix == ".onnx" and source.info.version == "1"
    assert source.description.name == "fridge-multilabel"
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 128, 128)).astype(np.float32)
    session = ort.InferenceSession(str(source.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.allclose(session.run(None, {"image": x})[0], expected, atol=1e-5)
