"""A Hugging Face transformers image model folder, exported with optimum (needs the hf extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldchain.cli import app
from contract import signing
from contract.bundle import unpack, verify_dir

pytest.importorskip("optimum.exporters.onnx", reason="the hf extra (optimum) is not installed")
transformers = pytest.importorskip("transformers")

DESCRIPTION = """schema: coldchain.model-description/v1
name: tiny-resnet
task: classification
input: {name: pixel_values, layout: NCHW}
preprocessing: {resize: resize, width: 64, height: 64, color: RGB, mean: [123.7, 116.3, 103.5],
                std: [58.4, 57.1, 57.4]}
labels: [milk_carton, bottle, can, egg_box, apple, tomato, cheese_block, yoghurt_cup]
postprocessor: {name: topk, params: {k: 1, softmax: true}}
"""


def test_hf_folder_compiles(tmp_path: Path, fridge_images: tuple[Path, Path], keys: signing.KeyPairPaths) -> None:
    config = transformers.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                       num_labels=8)
    transformers.ResNetForImageClassification(config).eval().save_pretrained(tmp_path / "hf")
    (tmp_path / "model.yaml").write_text(DESCRIPTION)
    images = tmp_path / "images"  # photos without the multi-label labels.csv
    images.mkdir()
    for photo in sorted(fridge_images[1].glob("*.jpg"))[:60]:
        (images / photo.name).write_bytes(photo.read_bytes())
    result = CliRunner().invoke(app, [
        "compile", str(tmp_path / "hf"), "--description", str(tmp_path / "model.yaml"), "-t", "x86-64-avx512-ort",
        "--calibration", str(images), "--calibration-count", "30", "--key", str(keys.private),
        "--out", str(tmp_path / "out"), "--sequence", "1", "--min-fidelity", "0.5"])
    assert result.exit_code == 0, result.output
    (tarball,) = (tmp_path / "out").glob("*.tar.gz")
    manifest = verify_dir(unpack(tarball, tmp_path / "b"), signing.TrustStore.from_paths([keys.public]))
    assert manifest.io.inputs[0].name == "pixel_values"
    assert manifest.io.outputs[0].name == "logits"
