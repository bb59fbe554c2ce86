"""arm64-litert end to end: onnx2tf in its own environment, full-integer int8, run under ai-edge-litert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldchain.cli import app
from compiler.errors import PassError
from compiler.passes.litert import ConvertLiteRTConfig, onnx2tf_executable
from contract import signing
from contract.bundle import unpack, verify_dir
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE


def _onnx2tf_missing() -> str | None:
    try:
        onnx2tf_executable(ConvertLiteRTConfig())
    except PassError as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_onnx2tf_missing() is not None, reason=str(_onnx2tf_missing()))


def test_litert_bundle_runs_within_budget(tmp_path: Path, fridge_images: tuple[Path, Path],
                                          keys: signing.KeyPairPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a relative --out (the default ``bundles`` is one): onnx2tf runs in its own working
    directory, so every path it is given must be absolute."""
    pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [
        "compile", str(MODEL_FILE), "--description", str(DESCRIPTION_FILE), "-t", "arm64-litert",
        "--calibration", str(fridge_images[0]), "--evaluation", str(fridge_images[1]), "--key", str(keys.private),
        "--out", "bundles", "--sequence", "3"])
    assert result.exit_code == 0, result.output
    (tarball,) = (tmp_path / "bundles").glob("*-arm64-litert-3.tar.gz")
    directory = unpack(tarball, tmp_path / "b")
    manifest = verify_dir(directory, signing.TrustStore.from_paths([keys.public]))
    assert manifest.model_file.path == "model.tflite"
    assert manifest.io.preprocessing.layout.value == "NHWC" and manifest.io.preprocessing.dtype == "int8"
    assert manifest.io.preprocessing.quantization is not None
    metrics = json.loads((directory / "manifest.json").read_text())["metrics"]
    assert metrics["compiled_metrics"]["fidelity"] >= 0.98
    assert metrics["float_metrics"]["accuracy"] - metrics["compiled_metrics"]["accuracy"] <= 0.01
    assert metrics["compiled_size_bytes"] <= 0.35 * metrics["float_size_bytes"]


def test_a_missing_onnx2tf_says_where_it_looked_and_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(PassError, match=r"setup-onnx2tf\.sh") as info:
        onnx2tf_executable(ConvertLiteRTConfig(venv=tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)


def test_one_conversion_gives_every_variant_and_leaves_its_input_alone(tmp_path: Path) -> None:
    """The search tries other LiteRT variants (dynamic range, 16x8, float16, float32) of one onnx2tf
    run. Before: onnx2tf rewrote the file it was given (onnxsim), the pipeline's cleanup model, so
    the conversion's cache key changed under it and every variant converted again (minutes each)."""
    import hashlib

    import numpy as np

    from compiler.passes.litert import ConvertLiteRT
    from compiler.precision import describe

    pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")
    model = tmp_path / "model.onnx"
    model.write_bytes(MODEL_FILE.read_bytes())
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=np.random.default_rng(0).normal(0, 1, (8, 3, 128, 128)).astype(np.float32))
    # dynamic range keeps weights under 1024 elements (the fridge head) in float32: said so
    expected = {"full_integer": "int8", "dynamic_range": "mixed: 7 int8 weights, 1 float32 of 8 compute nodes",
                "integer_16x8": "int8 weights, int16 activations", "float16": "fp16 weights, float32 compute",
                "float32": "float32"}
    for i, (variant, label) in enumerate(expected.items()):
        config = ConvertLiteRTConfig(variant=variant, calibration=calibration, cache_dir=tmp_path / "cache")
        workdir = tmp_path / f"w{i}"
        workdir.mkdir()
        out = ConvertLiteRT().run(model, config, workdir)
        assert describe(out).label == label, variant
        assert (workdir / "tf").is_dir() == (i == 0)  # onnx2tf ran for the first variant only
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
