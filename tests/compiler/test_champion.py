"""The compile against a real MLflow registry (SQLite under tmp_path): a new version with a broken
classifier head is caught by the regression check against the production version (@champion) and
by the degenerate-prediction warning; the manifest and MLflow record the version an alias resolved
to; artifacts go beside the tracking database; ``.work`` goes after a successful compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldchain.cli import app
from compiler.registry import register_model
from contract import signing
from contract.bundle import unpack
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.faulty import write_faulty_model

runner = CliRunner()
TARGET = "jetson-orin-trt-fp16"  # no quantization: the fastest target, the check is the same for all


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """fridge v1 (the good model, alias @champion) and v2 (broken head: milk everywhere)."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'db' / 'mlflow.db'}"
    (root / "db").mkdir()
    register_model(uri, MODEL_FILE, "fridge", DESCRIPTION_FILE.read_text())
    register_model(uri, write_faulty_model(MODEL_FILE, root / "fridge-v2.onnx"), "fridge", DESCRIPTION_FILE.read_text())
    mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias("fridge", "champion", "1")
    return uri


def _compile(source: str, uri: str, out: Path, images: tuple[Path, Path], keys: signing.KeyPairPaths,
             *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["compile", source, "-t", TARGET, "--calibration", str(images[0]), "--evaluation",
                                 str(images[1]), "--key", str(keys.private), "--out", str(out), "--mlflow-uri", uri,
                                 *extra])
    return result.exit_code, " ".join(result.output.split())


def test_a_broken_head_fails_against_the_champion_and_is_warned_about(
        registry: str, tmp_path: Path, fridge_images: tuple[Path, Path], keys: signing.KeyPairPaths) -> None:
    code, output = _compile("models:/fridge/2", registry, tmp_path / "out", fridge_images, keys)
    assert code == 1, output
    assert "champion models:/fridge@champion = models:/fridge/1" in output
    assert "vs champion models:/fridge/1" in output and "over budget" in output
    assert f"{TARGET}: failed at comparing with the champion" in output and "--allow-regression" in output
    assert "predicts {milk_carton} for 150 of 150 evaluation images" in output  # the degenerate warning
    assert not list((tmp_path / "out").glob("*.tar.gz"))
    assert (tmp_path / "out" / ".work").is_dir()  # kept: the failed target's log is there


def test_allow_regression_ships_with_the_comparison_in_summary_and_mlflow(
        registry: str, tmp_path: Path, fridge_images: tuple[Path, Path], keys: signing.KeyPairPaths) -> None:
    import mlflow

    code, output = _compile("models:/fridge/2", registry, tmp_path / "out", fridge_images, keys,
                            "--allow-regression", "--keep-work")
    assert code == 0, output
    assert "shipped despite a regression" in output
    assert len(list((tmp_path / "out").glob("*.tar.gz"))) == 1
    assert (tmp_path / "out" / ".work").is_dir()  # --keep-work
    client = mlflow.MlflowClient(tracking_uri=registry)
    runs = client.search_runs([client.get_experiment_by_name("coldchain-compile").experiment_id],
                              "tags.coldchain.source_version = '2'")
    assert "over budget" in runs[0].data.tags["coldchain.champion"]
    assert "milk_carton" in runs[0].data.tags["coldchain.warnings"]


def test_an_alias_is_recorded_as_the_version_it_resolved_to(
        registry: str, tmp_path: Path, fridge_images: tuple[Path, Path], keys: signing.KeyPairPaths) -> None:
    import mlflow

    out = tmp_path / "elsewhere" / "bundles"
    code, output = _compile("models:/fridge@champion", registry, out, fridge_images, keys)
    assert code == 0, output
    (tarball,) = out.glob("*.tar.gz")
    manifest = json.loads((unpack(tarball, tmp_path / "b") / "manifest.json").read_text())
    assert manifest["model"]["source_uri"] == "models:/fridge/1" and manifest["model"]["version"] == "1"
    database = Path(registry.removeprefix("sqlite:///")).parent
    assert not (out / "mlartifacts").exists() and list((database / "mlartifacts").rglob(tarball.name))
    assert "within budget" in output and "warning" not in output
    assert manifest["metrics"]["compiled_metrics"]["weights_bytes"] > 0
    assert manifest["metrics"]["compiled_metrics"]["peak_memory_bytes"] > 0
    client = mlflow.MlflowClient(tracking_uri=registry)
    (run,) = client.search_runs([client.get_experiment_by_name("coldchain-compile").experiment_id],
                                "params.source = 'models:/fridge/1'")
    assert run.data.metrics["weights_bytes"] > 0
    # artifacts beside the tracking database, not under this (or the first) compile's --out
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(database / "mlartifacts")
    assert not (out / ".work").exists()  # removed after a successful compile
