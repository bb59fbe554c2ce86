"""Files a test run leaves in the checkout: every test writes under ``tmp_path`` and every tool is
pointed into a temporary folder, so after the suite the repository root holds no model files and
git sees no new untracked file. ``tests/conftest.py`` checks this at the end of every session."""

from __future__ import annotations

import subprocess
from pathlib import Path

MODEL_SUFFIXES = (".onnx", ".tflite", ".npz", ".npy", ".engine", ".plan", ".pb", ".pt", ".data")


def untracked(root: Path) -> set[str]:
    """Files git neither tracks nor ignores (empty outside a git checkout)."""
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        return set()
    return {line[3:] for line in done.stdout.splitlines() if line.startswith("?? ")}


def root_models(root: Path) -> set[str]:
    """Model and tensor files at the top of the checkout, ignored or not (onnxruntime and optimum
    write their calibration graphs into the working directory unless told otherwise)."""
    return {p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES}


def strays(root: Path, untracked_before: set[str]) -> list[str]:
    return sorted(root_models(root) | (untracked(root) - untracked_before))
