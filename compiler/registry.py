"""MLflow: registering source models with their description, reading them back, and recording
each compile as a run whose bundle is registered again per target.

Embedded default: a SQLite store (``sqlite:///…/mlflow.db``) with artifacts in a folder
beside it, so ``mlflow ui --backend-store-uri sqlite:///…/mlflow.db`` shows the runs. At
scale: the same code against an MLflow tracking server (PostgreSQL + object storage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import ModelLoadError

DESCRIPTION_TAG = "coldchain.description"
SOURCE_TAGS = ("coldchain.source_model", "coldchain.source_version")
COMPILE_EXPERIMENT = "coldchain-compile"
REGISTER_EXPERIMENT = "coldchain-models"


def _mlflow(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow


_HOST_PATH = re.compile(r"(?:file:/+|(?<![\w.:/])/)(?:[^\s'\",;:()/]+/)+([^\s'\",;:()/]*)")


def without_host_paths(text: str) -> str:
    """``text`` (an error message for a run's tags) with every absolute path or file URI cut to its
    last part (``/srv/build/out/.work/x/calibration.npz`` -> ``…/calibration.npz``): the run is read
    by everyone with access to the registry, the full log (an artifact of the run) keeps the paths."""
    return _HOST_PATH.sub(lambda m: f"…/{m.group(1)}", text)


def _source(command: str) -> dict[str, str]:
    """MLflow's source tag, said by us: MLflow would record the running program's absolute path
    (``sys.argv[0]``), a folder of the build host in every run."""
    return {"mlflow.source.name": command}


def sqlite_uri(workspace: Path) -> str:
    return f"sqlite:///{(workspace / 'mlflow.db').resolve()}"


def artifact_root(tracking_uri: str) -> Path | None:
    """Where a new experiment's artifacts go, as the tracking store says: beside a SQLite database
    (``<its folder>/mlartifacts``), else where the store or server puts them (MLflow's default:
    inside a file store, the server's artifact root). Never where some compile's --out was: the
    first compile used to fix every later run's artifact location under its own output folder."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return None


def _experiment(mlflow: Any, name: str, artifacts: Path | None = None) -> str:
    """The experiment ``name``; a new one stores its artifacts in ``<artifacts or artifact_root>/<name>``."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = artifacts if artifacts is not None else artifact_root(mlflow.get_tracking_uri())
    location = (root / name).resolve().as_uri() if root is not None else None
    return str(mlflow.create_experiment(name, artifact_location=location))


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    uri: str


def register_model(tracking_uri: str, model: Path, name: str, description_text: str,
                   artifacts: Path | None = None) -> Registered:
    """Log an ONNX model in a run and register it as a new version of ``name`` with its description."""
    mlflow = _mlflow(tracking_uri)
    import onnx

    proto = onnx.load(str(model))
    experiment = _experiment(mlflow, REGISTER_EXPERIMENT, artifacts)
    with mlflow.start_run(experiment_id=experiment, run_name=f"register {name}",
                          tags=_source("coldchain model register")):
        mlflow.log_text(description_text, "model.yaml")
        info = mlflow.onnx.log_model(proto, name="model", registered_model_name=name,
                                     save_as_external_data=False)
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, DESCRIPTION_TAG, description_text)
    return Registered(name, version, f"models:/{name}/{version}")


@dataclass(frozen=True)
class Downloaded:
    path: Path  # an .onnx file, or an MLflow PyTorch model folder (flavor "pytorch")
    name: str
    version: str
    description_text: str | None
    flavor: str = "onnx"
    resolved_uri: str = ""  # models:/name/3 for models:/name@alias (what the manifest records)


def download_model(tracking_uri: str, uri: str, destination: Path) -> Downloaded:
    """Resolve ``models:/name/3``, ``models:/name@alias`` or ``runs:/id/path`` to a local ONNX file."""
    mlflow = _mlflow(tracking_uri)
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    name, version, description = uri, "run", None
    try:
        if uri.startswith("models:/"):
            ref = uri.removeprefix("models:/")
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, number = ref.partition("/")
                mv = client.get_model_version(name, number)
            version = str(mv.version)
            description = mv.tags.get(DESCRIPTION_TAG)
            uri = f"models:/{name}/{version}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))
    except MlflowException as exc:
        raise ModelLoadError(f"MLflow cannot resolve {uri}: {exc.message}") from exc
    if local.is_file():
        return Downloaded(local, name, version, description, resolved_uri=uri)
    onnx_files = sorted(local.rglob("*.onnx"))
    if onnx_files:
        return Downloaded(onnx_files[0], name, version, description, resolved_uri=uri)
    if (local / "MLmodel").exists() and "pytorch" in (local / "MLmodel").read_text():
        return Downloaded(local, name, version, description, flavor="pytorch", resolved_uri=uri)
    raise ModelLoadError(f"{uri} holds no ONNX model and no PyTorch model that coldchain can export")


def record_compile(tracking_uri: str, source: str, target: str, steps: list[dict[str, Any]],
                   params: dict[str, Any], bundle_tarball: Path, bundle_model_name: str,
                   tags: dict[str, str]) -> Registered:
    """One MLflow run per compile; the bundle is logged and registered as ``bundle_model_name``."""
    mlflow = _mlflow(tracking_uri)
    experiment = _experiment(mlflow, COMPILE_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{source} -> {target}",
                          tags=_source("coldchain compile")) as run:
        _log_steps(mlflow, params, steps, tags)
        mlflow.log_artifact(str(bundle_tarball), "bundle")
        artifact_uri = f"runs:/{run.info.run_id}/bundle/{bundle_tarball.name}"
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        client.create_registered_model(bundle_model_name, tags={"coldchain.kind": "bundle"})
    mv = client.create_model_version(bundle_model_name, artifact_uri, run_id=run.info.run_id, tags=tags)
    return Registered(bundle_model_name, str(mv.version), f"models:/{bundle_model_name}/{mv.version}")


def _log_steps(mlflow: Any, params: dict[str, Any], steps: list[dict[str, Any]], tags: dict[str, str]) -> None:
    mlflow.log_params(params)
    for index, step in enumerate(steps):
        mlflow.log_metrics({k: float(v) for k, v in step.items() if isinstance(v, int | float)}, step=index)
    if steps:
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in steps[-1].items() if isinstance(v, int | float)})
    mlflow.set_tags(tags)


def record_failed_compile(tracking_uri: str, source: str, target: str, steps: list[dict[str, Any]],
                          params: dict[str, Any], tags: dict[str, str], log: Path) -> str:
    """A compile that failed is a run too, with status FAILED, the steps measured before it stopped,
    the reason in its tags and the full log as an artifact. Returns the run id."""
    mlflow = _mlflow(tracking_uri)
    experiment = _experiment(mlflow, COMPILE_EXPERIMENT)
    run = mlflow.start_run(experiment_id=experiment, run_name=f"{source} -> {target} (failed)",
                           tags=_source("coldchain compile"))
    try:
        _log_steps(mlflow, params, steps, tags)
        mlflow.log_artifact(str(log), "log")
    finally:
        mlflow.end_run(status="FAILED")
    return str(run.info.run_id)


STREAM_TAG = "coldchain.stream"


def next_sequence(stream: str, tracking_uri: str | None, now: float) -> int:
    """The sequence of a new compile of ``stream``: the compile's Unix time in milliseconds, or one
    more than the highest sequence the registry holds for the stream if that is higher.

    One scheme for every source: a file compile without a registry draws the clock, a registry
    compile draws max(clock, registered + 1), so either is above every earlier compile of the
    stream it can see, and above every earlier clock-drawn one (clocks move forward; compiles of
    one stream started in the same millisecond on different hosts are the only race). Seconds were
    too coarse: a file compile and the registry compile after it drew the same second (in CI)."""
    registered = stream_sequences(tracking_uri, stream) if tracking_uri else []
    return max(int(now * 1000), max(registered, default=0) + 1)


def stream_sequences(tracking_uri: str, stream: str) -> list[int]:
    """Every sequence registered for bundles of ``stream``, whatever their target: versions tagged
    with the stream, and (registered before streams) those whose source model has that name."""
    mlflow = _mlflow(tracking_uri)
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    sequences: list[int] = []
    try:
        token = None
        while True:
            page = client.search_registered_models(max_results=1000, page_token=token)
            for model in page:
                if model.tags.get("coldchain.kind") != "bundle":
                    continue
                for version in client.search_model_versions(f"name='{model.name}'"):
                    tags = version.tags
                    if tags.get(STREAM_TAG, tags.get(SOURCE_TAGS[0])) == stream and \
                            tags.get("coldchain.sequence", "").isdigit():
                        sequences.append(int(tags["coldchain.sequence"]))
            token = page.token
            if not token:
                return sequences
    except MlflowException as exc:
        raise ModelLoadError(f"MLflow at {tracking_uri} cannot list the bundles of stream {stream!r} "
                             f"(needed for the next sequence): {exc.message}") from exc
