"""Where a compile starts: a model file or an MLflow URI, resolved to a local, self-contained ONNX
file (external data read in, see ``compiler.onnxio``), its identity (name, version, URI, sha256
of the model with its weights) and its description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from compiler import onnxio
from compiler.checks import check_description
from compiler.description import ModelDescription, load_description, parse_description
from compiler.errors import DescriptionError, ModelLoadError
from compiler.hf_export import export_hf, is_hf_model
from contract.manifest import ModelSource

REGISTRY_PREFIXES = ("models:/", "runs:/")


@dataclass(frozen=True)
class Source:
    path: Path
    info: ModelSource
    description: ModelDescription


def _intake(path: Path, workdir: Path) -> Path:
    """The model as one file: weights stored beside it are read in (from inside its folder only)."""
    return onnxio.self_contained(path, workdir / "source" / "self-contained")


def resolve(source: str, description: Path | None, workdir: Path, tracking_uri: str | None, opset: int) -> Source:
    """Resolve ``source``; ``description`` overrides one stored in the registry."""
    if source.startswith(REGISTRY_PREFIXES):
        if tracking_uri is None:
            raise ModelLoadError(f"{source} is a registry URI: give --mlflow-uri (e.g. sqlite:///mlflow.db)")
        from compiler.registry import download_model

        got = download_model(tracking_uri, source, workdir / "source")
        if description is not None:
            desc = load_description(description)
        elif got.description_text is not None:
            desc = parse_description(yaml.safe_load(got.description_text), f"{source} (registry tag)")
        else:
            raise DescriptionError(f"{source} was registered without a description: pass --description model.yaml")
        path = got.path
        if got.flavor == "pytorch":
            from compiler.torch_export import export_pytorch

            pre = desc.preprocessing
            nchw = desc.input.layout.value == "NCHW"
            shape = [1, 3, pre.height, pre.width] if nchw else [1, pre.height, pre.width, 3]
            path = export_pytorch(got.path, workdir / "source" / "exported.onnx", desc.input.name, shape, opset)
        path = _intake(path, workdir)
        check_description(path, desc)
        # the version an alias resolved to, not the alias: models:/name@champion moves on
        info = ModelSource(name=got.name, version=got.version, source_uri=got.resolved_uri or source,
                           sha256=onnxio.sha256(path))
        return Source(path, info, desc)
    path = Path(source)
    if is_hf_model(path):
        path = export_hf(path, workdir / "source" / "hf", opset)
    if not path.exists():
        raise ModelLoadError(f"model {source} does not exist (give a file path, models:/name/version, "
                             "models:/name@alias or runs:/run-id/path)")
    if description is None:
        raise DescriptionError(f"{source} needs a model description: pass --description model.yaml")
    desc = load_description(description)
    given = path
    path = _intake(path, workdir)
    check_description(path, desc)
    digest = onnxio.sha256(path)
    # the file's name, not its folder: the manifest goes to the fleet and MLflow to everyone who reads
    # it; the sha256 says which model it was, wherever it lay
    info = ModelSource(name=given.stem, version=digest[:12], source_uri=f"file:{given.resolve().name}", sha256=digest)
    return Source(path, info, desc)
