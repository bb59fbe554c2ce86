"""Loading and saving ONNX models with the errors a user can act on.

External data (weights in files beside the graph: torch's default ``dynamo=True`` export writes
``model.onnx.data``, MLflow's ONNX flavor does the same) is read only from regular files inside
the model's folder: a ``location`` that is absolute, climbs out (``../../etc/passwd``) or is a
link to a file outside is refused, as is one that is missing or shorter than its tensor.
``self_contained`` writes such a model as one file, so the compile's work folders, the bundle and
the source's sha256 carry its weights.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor

from compiler.errors import ModelLoadError

_TWO_GB = 2**31 - 1
_ONNX_ERRORS = (DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError)


def _tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor of ``graph`` that can hold data: initializers and attribute tensors, subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external(model: onnx.ModelProto) -> list[TensorProto]:
    return [t for t in _tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]


def external_files(model: onnx.ModelProto, path: Path) -> list[Path]:
    """The data files ``model`` (read from ``path``) names, each checked: inside the model's folder,
    a regular file, long enough for the tensors read from it."""
    folder = path.parent.resolve()
    files: dict[Path, int] = {}  # file -> bytes its tensors need
    for tensor in _external(model):
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} has invalid external data ({exc})") from exc
        location = Path(info.location)
        where = (folder / location).resolve()
        if not info.location or location.is_absolute() or not where.is_relative_to(folder):
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} names external data {info.location!r}, which is "
                                 f"outside the model's folder {folder}: refused (only files beside the model "
                                 "are read)")
        if not where.exists():
            raise ModelLoadError(f"{path}: the external data file {info.location} of tensor {tensor.name!r} does not "
                                 f"exist in {folder}: copy it beside the model (torch and MLflow write "
                                 "weights there)")
        if not where.is_file():
            raise ModelLoadError(f"{path}: the external data {info.location} of tensor {tensor.name!r} is not a "
                                 "regular file")
        end = (info.offset or 0) + (info.length or 0)
        files[where] = max(files.get(where, 0), end)
    for where, end in files.items():
        if where.stat().st_size < end:
            raise ModelLoadError(f"{path}: the external data file {where.relative_to(folder)} holds "
                                 f"{where.stat().st_size} bytes, its tensors need {end}: is it truncated?")
    return sorted(files)


def load(path: Path) -> onnx.ModelProto:
    """Load an ONNX model, with its external data if it has any (checked files beside it)."""
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except _ONNX_ERRORS as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model ({exc}); is the file corrupt or another format?") \
            from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{path} holds no ONNX graph (0 nodes): is it really an ONNX model?")
    external_files(model, path)
    folder = str(path.parent.resolve())
    for tensor in _external(model):
        try:
            load_external_data_for_tensor(tensor, folder)
        except (*_ONNX_ERRORS, OSError) as exc:
            raise ModelLoadError(f"{path}: cannot read the external data of tensor {tensor.name!r}: {exc}") from exc
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > _TWO_GB:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))
    return path


def self_contained(path: Path, folder: Path) -> Path:
    """``path`` if its weights are in it, else the model with its external data read in (checked),
    saved under ``folder`` (a model over 2 GB keeps one ``.data`` file beside it)."""
    try:
        header = onnx.load(str(path), load_external_data=False)
    except _ONNX_ERRORS as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model ({exc}); is the file corrupt or another format?") \
            from exc
    if not _external(header):
        return path
    return save(load(path), folder / path.name)


def copy(source: Path, destination: Path) -> Path:
    """Copy a model file and the external data files it names (a model over 2 GB has one)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, destination)
    header = onnx.load(str(source), load_external_data=False)
    folder = source.parent.resolve()
    for data in external_files(header, source):
        target = destination.parent / data.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data, target)
    return destination


def sha256(path: Path) -> str:
    """The model file's digest, with the external data files it names (its weights) after it."""
    digest = hashlib.sha256(path.read_bytes())
    for data in external_files(onnx.load(str(path), load_external_data=False), path):
        digest.update(data.read_bytes())
    return digest.hexdigest()


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
