"""Real MLflow (SQLite store): register with a description, compile from models:/…, find the bundle again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldchain.cli import app
from contract import signing
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_register_compile_and_find_the_bundle(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "artifacts"
    result = runner.invoke(app, ["model", "register", str(MODEL_FILE), "--name", "fridge", "--description",
                                 str(DESCRIPTION_FILE), "--mlflow-uri", uri, "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output
    assert "models:/fridge/1" in result.output
    write_dataset(tmp_path / "images", 90, seed=7)
    keys = signing.write_keypair(tmp_path / "keys", "k")
    out = tmp_path / "bundles"
    # a file compile of the same model first (no registry: the clock), then registry compiles: newer
    started = int(time.time())
    by_file = runner.invoke(app, ["compile", str(MODEL_FILE), "--description", str(DESCRIPTION_FILE), "-t",
                                  "arm64-cortex-a72-ort", "--calibration", str(tmp_path / "images"),
                                  "--calibration-count", "40", "--key", str(keys.private), "--out",
                                  str(tmp_path / "file"), "--stream", "fridge"])
    assert by_file.exit_code == 0, by_file.output
    file_manifest = json.loads(next((tmp_path / "file").glob("*/manifest.json")).read_text())
    assert file_manifest["stream"] == "fridge" and file_manifest["sequence"] >= started
    for _ in range(2):  # two compiles: sequences must increase
        result = runner.invoke(app, ["compile", "models:/fridge/1", "-t", "arm64-cortex-a72-ort", "--calibration",
                                     str(tmp_path / "images"), "--calibration-count", "40", "--key",
                                     str(keys.private), "--out", str(out), "--mlflow-uri", uri])
        assert result.exit_code == 0, result.output

    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    versions = sorted(client.search_model_versions("name='fridge--arm64-cortex-a72-ort'"), key=lambda v: v.version)
    sequences = [int(v.tags["coldchain.sequence"]) for v in versions]
    assert file_manifest["sequence"] < sequences[0] < sequences[1], sequences
    assert {v.tags["coldchain.stream"] for v in versions} == {"fridge"}
    assert versions[0].tags["coldchain.source_model"] == "fridge"
    assert versions[0].tags["coldchain.source_version"] == "1"
    run = client.get_run(versions[1].run_id)
    assert run.data.params["target"] == "arm64-cortex-a72-ort"
    assert run.data.metrics["final_fidelity"] >= 0.99
    # float, cleanup, quantize.static, fold.normalize
    assert [m.step for m in client.get_metric_history(run.info.run_id, "size_bytes")] == [0, 1, 2, 3]
    client.set_registered_model_alias("fridge", "production", "1")
    by_alias = runner.invoke(app, ["compile", "models:/fridge@production", "-t", "arm64-cortex-a72-ort",
                                   "--calibration", str(tmp_path / "images"), "--calibration-count", "40", "--key",
                                   str(keys.private), "--out", str(tmp_path / "alias"), "--mlflow-uri", uri])
    assert by_alias.exit_code == 0, by_alias.output
    (aliased,) = (tmp_path / "alias").glob("fridge-1-arm64-cortex-a72-ort-*.tar.gz")
    assert int(aliased.name.removesuffix(".tar.gz").rpartition("-")[2]) > sequences[1]  # newer in its stream
    unknown = runner.invoke(app, ["compile", "models:/fridge@nightly", "-t", "arm64-cortex-a72-ort", "--calibration",
                                  str(tmp_path / "images"), "--key", str(keys.private), "--out", str(tmp_path / "x"),
                                  "--mlflow-uri", uri])
    assert unknown.exit_code == 1 and "MLflow cannot resolve models:/fridge@nightly" in unknown.output
    local = Path(mlflow.artifacts.download_artifacts(versions[1].source, dst_path=str(tmp_path / "dl")))
    assert local.name.endswith(f"-{sequences[1]}.tar.gz")
    verify = runner.invoke(app, ["bundle", "verify", str(local), "--trusted", str(keys.public)])
    assert verify.exit_code == 0, verify.output


def test_registry_uri_without_tracking_uri(tmp_path: Path) -> None:
    keys = signing.write_keypair(tmp_path / "keys", "k")
    write_dataset(tmp_path / "images", 20, seed=7)
    result = runner.invoke(app, ["compile", "models:/fridge/1", "-t", "arm64-cortex-a72-ort", "--calibration",
                                 str(tmp_path / "images"), "--calibration-count", "10", "--key", str(keys.private),
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "give --mlflow-uri" in result.output
