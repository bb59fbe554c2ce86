"""PyTorch models (MLflow ``pytorch`` flavor) exported to ONNX; needs the ``train`` extra."""

from __future__ import annotations

from pathlib import Path

from compiler.errors import ModelLoadError


def export_pytorch(model_dir: Path, out: Path, input_name: str, shape: list[int], opset: int) -> Path:
    try:
        import mlflow.pytorch
        import torch
    except ImportError as exc:
        raise ModelLoadError("this is a PyTorch model: install coldchain[train] (CPU torch) to export it") from exc
    model = mlflow.pytorch.load_model(str(model_dir), map_location="cpu")
    try:
        model.eval()
        traced = True
    except NotImplementedError:  # MLflow's default 'pt2' format loads an exported graph, already in eval form
        traced = False
    try:
        torch.onnx.export(model, (torch.zeros(*shape),), str(out), input_names=[input_name],
                          opset_version=opset, dynamo=not traced)
    except Exception as exc:
        raise ModelLoadError(f"exporting the PyTorch model to ONNX failed: {exc}") from exc
    return out
