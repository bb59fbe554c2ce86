"""Hugging Face transformers image models (a folder with ``config.json``) exported to ONNX with
optimum; needs the ``hf`` extra (optimum with its ONNX Runtime part, transformers, torch)."""

from __future__ import annotations

from pathlib import Path

from compiler.errors import ModelLoadError


def is_hf_model(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def export_hf(model_dir: Path, out_dir: Path, opset: int, task: str = "image-classification") -> Path:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ModelLoadError(f"{model_dir} is a Hugging Face model: install coldchain[hf] (optimum) to export it") \
            from exc
    try:
        main_export(str(model_dir), output=out_dir, task=task, opset=opset, device="cpu")
    except Exception as exc:  # optimum raises ValueError/RuntimeError/KeyError by model type
        raise ModelLoadError(f"optimum could not export {model_dir} to ONNX: {exc}") from exc
    return out_dir / "model.onnx"
