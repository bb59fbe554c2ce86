"""The end-of-session check for files left in the checkout (tests/strays.py) finds them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.strays import strays, untracked


def test_strays_are_found(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/*.onnx\n")
    (tmp_path / "kept.txt").write_text("there before the run")
    before = untracked(tmp_path)
    assert strays(tmp_path, before) == []
    (tmp_path / "augmented_model.onnx").write_bytes(b"x")  # ignored by git, still a model at the root
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "left.db").write_bytes(b"x")
    assert strays(tmp_path, before) == ["augmented_model.onnx", "sub/left.db"]


def test_this_checkout_holds_no_model_at_its_root() -> None:
    root = Path(__file__).resolve().parents[1]
    assert not [p for p in root.iterdir() if p.suffix in (".onnx", ".tflite")]
