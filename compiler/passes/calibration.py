"""Calibration tensors as passes read them: an ``.npz`` with one array per model input,
stacked along the batch axis (sample i of input ``x`` is ``data[x][i:i+1]``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from compiler.errors import CalibrationError


def load_samples(path: Path | None, what: str) -> dict[str, np.ndarray]:
    if path is None:
        raise CalibrationError(f"{what} needs calibration data; give calibration images (--calibration DIR)")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration tensors {path}: {exc}") from exc
    if not arrays or len({len(a) for a in arrays.values()}) != 1:
        raise CalibrationError(f"calibration tensors {path} are empty or have different sample counts")
    return arrays


def fingerprint(path: Path) -> dict[str, str | int]:
    """What a pass record says of its calibration tensors: their content's sha256 (names, dtypes,
    shapes and values; not the .npz's bytes, whose zip entries carry the time they were written),
    how many samples, and the file's name. Never the folder: a bundle must not carry the build
    host's file layout."""
    arrays = load_samples(path, "a pass record")
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{list(array.shape)}\0".encode())
        digest.update(array.tobytes())
    return {"file": path.name, "sha256": digest.hexdigest(), "samples": len(next(iter(arrays.values())))}


def iterate(arrays: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    count = len(next(iter(arrays.values())))
    for i in range(count):
        yield {name: a[i : i + 1] for name, a in arrays.items()}


class NpzReader(CalibrationDataReader):  # type: ignore[misc]
    """onnxruntime's calibration reader over the samples of an .npz."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays
        self._it = iterate(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iterate(self._arrays)
