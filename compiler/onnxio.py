"""Loading and saving ONNX models with the errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from compiler.errors import ModelLoadError

_TWO_GB = 2**31 - 1


def load(path: Path) -> onnx.ModelProto:
    """Load an ONNX model, with its external data if it has any (files beside it)."""
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except (DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model ({exc}); is the file corrupt or another format?") \
            from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{path} holds no ONNX graph (0 nodes): is it really an ONNX model?")
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > _TWO_GB:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))
    return path


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
