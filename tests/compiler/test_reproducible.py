"""A bundle says nothing of the build host's file layout, and two identical compiles give the same
bundle apart from the time and the latency measured (found by review: the manifest carried the
calibration tensors' absolute path under ``--out`` and the source model's absolute ``file://`` URI,
also the MLflow run's ``source``; a failed bundle write left a half-written bundle folder)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
from typer.testing import CliRunner

from agent import selftest
from coldchain.cli import app
from contract import signing
from contract.bundle import unpack
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE

runner = CliRunner()
TARGETS = ("arm64-cortex-a72-ort", "jetson-orin-trt-int8")  # quantize.static and tensorrt.prepare int8
MEASURED = {"created_at", "p50_ms", "p95_ms", "latency_vs_float"}  # the clock and this host's timings


def _compile(model: Path, out: Path, images: tuple[Path, Path], keys: signing.KeyPairPaths,
             *extra: str, targets: tuple[str, ...] = TARGETS, env: dict[str, str] | None = None) -> Any:
    args = ["compile", str(model), "--description", str(DESCRIPTION_FILE), "--calibration", str(images[0]),
            "--evaluation", str(images[1]), "--key", str(keys.private), "--out", str(out), "--sequence", "5"]
    for target in targets:
        args += ["-t", target]
    return runner.invoke(app, [*args, *extra], env={"COLUMNS": "200", **(env or {})})


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _without_measured(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_measured(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_without_measured(v) for v in value]
    return value


def _host_paths(texts: list[str], *roots: Path) -> list[str]:
    """Texts that name a folder of this host: an absolute path or file URI, or one of ``roots``."""
    return [t for t in texts if t.startswith(("/", "file:/")) or any(str(r) in t for r in roots)]


def _bundles(out: Path, tmp: Path) -> dict[str, Path]:
    return {target: unpack(next(out.glob(f"*-{target}-5.tar.gz")), tmp / target) for target in TARGETS}


def test_two_compiles_give_the_same_bundles_and_name_no_host_folder(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                                    keys: signing.KeyPairPaths) -> None:
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifests: list[dict[str, dict[str, Any]]] = []
    files: list[dict[str, dict[str, str]]] = []
    for host in ("first-host", "second-host"):
        model = tmp_path / host / "models" / "fridge.onnx"  # the same model, in another place
        model.parent.mkdir(parents=True)
        shutil.copy(MODEL_FILE, model)
        out = tmp_path / host / "bundles"
        result = _compile(model, out, fridge_images, keys, "--mlflow-uri", mlflow)
        assert result.exit_code == 0, result.output
        bundles = _bundles(out, tmp_path / host / "unpacked")
        manifests.append({t: json.loads((d / "manifest.json").read_text()) for t, d in bundles.items()})
        files.append({t: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()
                          if p.name not in ("manifest.json", "manifest.sig")} for t, d in bundles.items()})
        for target, manifest in manifests[-1].items():
            assert _host_paths(_strings(manifest), tmp_path, fridge_images[0].parent) == [], target
            (quantized,) = [p for p in manifest["passes"] if "calibration" in p["config"]]
            calibration = quantized["config"]["calibration"]
            # what reproducing the compile needs: the tensors' content and count, not where they were
            assert calibration["file"] == "calibration.npz" and calibration["samples"] == 60
            assert len(calibration["sha256"]) == 64
            assert manifest["model"]["source_uri"] == "file:fridge.onnx"
    assert files[0] == files[1]  # model, golden I/O and engine config: byte for byte
    for target in TARGETS:
        assert _without_measured(manifests[0][target]) == _without_measured(manifests[1][target]), target

    from mlflow import MlflowClient

    client = MlflowClient(mlflow)
    experiment = client.get_experiment_by_name("coldchain-compile")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 * len(TARGETS)
    for run in runs:
        texts = [*run.data.params.values(), *run.data.tags.values()]
        assert _host_paths(texts, tmp_path, fridge_images[0].parent) == [], run.data.tags
        assert run.data.params["source"] == "file:fridge.onnx"


def test_a_bundle_that_fails_to_be_written_leaves_no_bundle_behind(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                                   keys: signing.KeyPairPaths,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the golden self-test failing on the build host left ``<out>/<bundle>/`` with a model
    and golden I/O but no manifest, beside the good bundles, for ``add-bundle`` to trip on."""
    real = selftest.run_golden

    def broken_runtime(*args: Any, **kwargs: Any) -> Any:  # the build host's runtime disagrees with golden
        return dataclasses.replace(real(*args, **kwargs), passed=False, max_abs_error=1.0)

    monkeypatch.setattr("compiler.bundle.run_golden", broken_runtime)
    out = tmp_path / "bundles"
    result = _compile(MODEL_FILE, out, fridge_images, keys)
    assert result.exit_code == 1
    assert "fails its own golden self-test" in result.output
    left = sorted(p.name for p in out.iterdir())
    assert left == [".work"], left  # the work files and logs of the failed targets, nothing else


def test_a_failed_compiles_mlflow_run_names_no_host_folder(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                           keys: signing.KeyPairPaths) -> None:
    """The reason of a failure is a tag of the run: its paths are cut to their last part (the full
    log, an artifact of the run, keeps them). Before: ``onnx2tf is not installed (looked in /…)``."""
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nowhere = tmp_path / "build-host" / "no-onnx2tf-here"
    result = _compile(MODEL_FILE, tmp_path / "bundles", fridge_images, keys, "--mlflow-uri", mlflow,
                      targets=("arm64-litert",), env={"COLDCHAIN_ONNX2TF_VENV": str(nowhere)})
    assert result.exit_code == 1 and "onnx2tf is not installed" in result.output

    from mlflow import MlflowClient

    client = MlflowClient(mlflow)
    experiment = client.get_experiment_by_name("coldchain-compile")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    failure = run.data.tags["coldchain.failure"]
    assert "onnx2tf is not installed (looked in …/no-onnx2tf-here)" in failure
    texts = [*run.data.params.values(), *run.data.tags.values()]
    assert _host_paths(texts, tmp_path, fridge_images[0].parent) == [], run.data.tags


def test_a_compile_refused_before_any_target_leaves_no_work_folder(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                                   keys: signing.KeyPairPaths) -> None:
    """Before: intake had saved the model (its external data read in) under ``<out>/.work/source``
    when the calibration folder was refused; no target ran, no log was written, and the copy stayed.
    A work folder that was there before (an earlier failed compile's logs) is left as it was."""
    model = tmp_path / "exported" / "fridge.onnx"  # weights beside the graph, as torch's exporter writes
    model.parent.mkdir()
    onnx.save_model(onnx.load(str(MODEL_FILE)), str(model), save_as_external_data=True, location="fridge.onnx.data",
                    size_threshold=0)
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(fridge_images[0].glob("*.jpg"))[:3]:
        shutil.copy(path, few / path.name)
    out = tmp_path / "bundles"
    result = _compile(model, out, (few, fridge_images[1]), keys, targets=("x86-64-avx512-ort",))
    assert result.exit_code == 1 and "at least 8 readable images" in result.output
    assert not (out / ".work").exists()
    earlier = out / ".work" / "fridge-x86-64-avx512-ort" / "compile.log"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier compile's log")
    result = _compile(model, out, (few, fridge_images[1]), keys, targets=("x86-64-avx512-ort",))
    assert result.exit_code == 1
    assert earlier.read_text() == "an earlier compile's log"
    assert sorted(p.name for p in (out / ".work").iterdir()) == ["fridge-x86-64-avx512-ort"]
