"""The demo fridge model: a procedural fridge-shelf photo generator and a small multi-label CNN."""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
MODEL_FILE = MODEL_DIR / "fridge_multilabel.onnx"
DESCRIPTION_FILE = MODEL_DIR / "model.yaml"
