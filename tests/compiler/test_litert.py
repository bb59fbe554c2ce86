"""arm64-litert end to end: onnx2tf in its own environment, full-integer int8, run under ai-edge-litert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldchain.cli import app
from compiler.passes.litert import DEFAULT_VENV
from contract import signing
from contract.bundle import unpack, verify_dir
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE

pytestmark = pytest.mark.skipif(not (DEFAULT_VENV / "bin" / "onnx2tf").exists(),
                                reason=f"onnx2tf is not installed at {DEFAULT_VENV}: run scripts/setup-onnx2tf.sh")


def test_litert_bundle_runs_within_budget(tmp_path: Path, fridge_images: tuple[Path, Path],
                                          keys: signing.KeyPairPaths) -> None:
    pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")
    result = CliRunner().invoke(app, [
        "compile", str(MODEL_FILE), "--description", str(DESCRIPTION_FILE), "-t", "arm64-litert",
        "--calibration", str(fridge_images[0]), "--evaluation", str(fridge_images[1]), "--key", str(keys.private),
        "--out", str(tmp_path), "--sequence", "3"])
    assert result.exit_code == 0, result.output
    (tarball,) = tmp_path.glob("*-arm64-litert-3.tar.gz")
    directory = unpack(tarball, tmp_path / "b")
    manifest = verify_dir(directory, signing.TrustStore.from_paths([keys.public]))
    assert manifest.model_file.path == "model.tflite"
    assert manifest.io.preprocessing.layout.value == "NHWC" and manifest.io.preprocessing.dtype == "int8"
    assert manifest.io.preprocessing.quantization is not None
    metrics = json.loads((directory / "manifest.json").read_text())["metrics"]
    assert metrics["compiled_metrics"]["fidelity"] >= 0.98
    assert metrics["float_metrics"]["accuracy"] - metrics["compiled_metrics"]["accuracy"] <= 0.01
    assert metrics["compiled_size_bytes"] <= 0.35 * metrics["float_size_bytes"]
