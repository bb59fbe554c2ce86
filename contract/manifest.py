"""The bundle manifest (``schema: coldchain.manifest/v3``): everything a device needs to know
about a bundle, and everything an auditor needs to know about how it was made.

``manifest.json`` is signed as exact bytes (``manifest.sig``); :func:`dump_manifest` writes
canonical bytes (sorted keys, no spaces) so the same manifest always signs the same.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import Field, JsonValue, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from contract.base import (
    MAX_INT,
    ContractModel,
    Count,
    Identifier,
    Label,
    Message,
    Name,
    Sha256,
    Text,
    decode,
    utc_now,
)
from contract.common import Histogram, Runtime, Stream
from contract.compat import StrEnum
from contract.transfer import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE

MANIFEST_SCHEMA: Final = "coldchain.manifest/v4"
"""v2 names the model ``stream`` (required); v1 manifests (no stream) are still read: their stream
is the model's name, which is what the sequences of v1 compiles were counted in. v3 names the
``boards`` the bundle is for (required); v1 and v2 manifests name none and are not board-checked.
v4 lets the preprocessing resize the short side, resize then crop the centre, and choose the
interpolation (:data:`V4_PREPROCESSING`); the compiler writes v4 only for a bundle that uses them
(:func:`schema_for`), so an agent of protocol 2 (which reads up to v3) still takes every other bundle."""
V3_SCHEMA: Final = "coldchain.manifest/v3"
MANIFEST_SCHEMAS: Final = ("coldchain.manifest/v1", "coldchain.manifest/v2", V3_SCHEMA, MANIFEST_SCHEMA)
UNKNOWN_BOARD: Final = "unknown"
"""What a device that was not told its board reports: it cannot be board-checked."""
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

Positive = Annotated[float, Field(gt=0)]
Dim = Annotated[int, Field(ge=-1, le=MAX_INT)]  # -1: dynamic


class ModelSource(ContractModel):
    name: Name
    version: Name
    source_uri: Text
    sha256: Sha256  # of the source model file


class RuntimeRequirement(ContractModel):
    name: Runtime
    min_version: Name


class TargetInfo(ContractModel):
    name: Name
    profile: dict[str, JsonValue]  # the full resolved target profile, as the compiler used it
    runtime: RuntimeRequirement


class FileEntry(ContractModel):
    path: Annotated[str, Field(min_length=1, max_length=256)]
    size: Count
    sha256: Sha256
    chunk_size: Annotated[int, Field(ge=1, le=MAX_CHUNK_SIZE)] = DEFAULT_CHUNK_SIZE
    chunks: Annotated[list[Sha256], Field(min_length=1)]
    role: Literal["model", "golden", "engine_config", "labels", "other"] = "model"

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        p = PurePosixPath(value)
        if p.is_absolute() or ".." in p.parts or "\\" in value or value in (MANIFEST_FILE, SIGNATURE_FILE):
            raise ValueError("file path must be relative inside the bundle, without '..', and not the manifest")
        return value

    @model_validator(mode="after")
    def _chunk_count(self) -> FileEntry:
        expected = max(1, -(-self.size // self.chunk_size))
        if len(self.chunks) != expected:
            raise ValueError(f"{self.size} bytes in chunks of {self.chunk_size} need {expected} chunk hashes, "
                             f"got {len(self.chunks)}")
        return self


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class TensorSpec(ContractModel):
    name: Name
    shape: Annotated[list[Dim], Field(max_length=8)]
    dtype: Literal["float32", "float16", "uint8", "int8", "int32", "int64"]
    layout: Layout | None = None


class Quantization(ContractModel):
    """Affine input quantization: q = round(x / scale) + zero_point."""

    scale: Positive
    zero_point: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


Size = Annotated[int, Field(gt=0, le=8192)]

V4_PREPROCESSING: Final[dict[str, object]] = {"short_side": None, "resize_width": None, "resize_height": None,
                                              "crop": "none", "interpolation": "linear"}
"""Preprocessing fields that came with ``coldchain.manifest/v4``, with the value that means "not used": a
manifest whose preprocessing uses none of them is written as v3 (and without these keys), so an agent of
protocol 2 still reads it."""


class Preprocessing(ContractModel):
    """From a decoded BGR uint8 frame to the model input: resize (and crop), colour, normalise, layout, dtype.

    ``resize``: ``resize`` scales the whole frame to ``width`` x ``height`` (or to ``resize_width`` x
    ``resize_height`` before a centre crop); ``letterbox`` keeps the aspect ratio and pads; ``short_side``
    scales the frame so its short side is ``short_side`` pixels, keeping the aspect ratio, then crops
    the centre ``width`` x ``height`` (torchvision's ``Resize(256)`` + ``CenterCrop(224)``)."""

    resize: Literal["resize", "letterbox", "short_side"]
    width: Size
    height: Size
    color: Literal["RGB", "BGR"]
    mean: Annotated[list[float], Field(min_length=3, max_length=3)] = [0.0, 0.0, 0.0]
    std: Annotated[list[Positive], Field(min_length=3, max_length=3)] = [1.0, 1.0, 1.0]
    pad_value: float = 0.0
    layout: Layout = Layout.NCHW
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"
    quantization: Quantization | None = None
    # coldchain.manifest/v4 on (see V4_PREPROCESSING):
    short_side: Size | None = None
    resize_width: Size | None = None
    resize_height: Size | None = None
    crop: Literal["none", "center"] = "none"
    interpolation: Literal["linear", "cubic", "area", "nearest"] = "linear"

    @model_validator(mode="after")
    def _resize_and_crop(self) -> Preprocessing:
        size = f"{self.width}x{self.height}"
        if (self.short_side is not None) != (self.resize == "short_side"):
            raise ValueError("short_side (the length of the frame's short side after resizing) goes with "
                             "resize: short_side, and only with it")
        if (self.resize_width is None) != (self.resize_height is None):
            raise ValueError("resize_width and resize_height go together (the size before the centre crop)")
        if self.resize_width is not None and self.resize != "resize":
            raise ValueError("resize_width and resize_height go with resize: resize (use short_side to keep the "
                             "aspect ratio)")
        if self.crop == "center" and self.resize == "letterbox":
            raise ValueError("crop: center does not go with resize: letterbox (a letterbox keeps the whole frame)")
        if self.resize == "short_side":
            if self.crop != "center":
                raise ValueError("resize: short_side needs crop: center (the resized frame's size varies with its "
                                 f"aspect ratio; the model takes {size})")
            if self.short_side is not None and self.short_side < max(self.width, self.height):
                raise ValueError(f"short_side {self.short_side} must be at least the crop's larger side: the "
                                 f"centre crop of {size} must fit in the resized frame")
        if self.resize_width is not None and self.resize_height is not None:
            if self.crop != "center":
                raise ValueError("resize_width and resize_height need crop: center (without a crop, set width and "
                                 "height to the size to resize to)")
            if self.resize_width < self.width or self.resize_height < self.height:
                raise ValueError(f"resize_width x resize_height ({self.resize_width}x{self.resize_height}) must be "
                                 f"at least the centre crop's {size}")
        return self

    @property
    def needs_v4(self) -> bool:
        """Whether this preprocessing uses what came with ``coldchain.manifest/v4``."""
        return self.resize == "short_side" or any(getattr(self, k) != v for k, v in V4_PREPROCESSING.items())

    @model_serializer(mode="wrap")
    def _without_unused_v4_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Fields at their "not used" value are left out, so a preprocessing that needs no v4 feature dumps
        (and signs) as v3 and older compilers wrote it."""
        data: dict[str, Any] = handler(self)
        for key, unused in V4_PREPROCESSING.items():
            if key in data and data[key] == unused:
                del data[key]
        return data


class Task(StrEnum):
    CLASSIFICATION = "classification"
    MULTILABEL = "multilabel"
    DETECTION = "detection"


class Postprocessor(ContractModel):
    name: Name  # key in the agent's postprocessor registry: "topk", "multilabel", "nanodet", ...
    params: dict[str, JsonValue] = {}


class IOSpec(ContractModel):
    inputs: Annotated[list[TensorSpec], Field(min_length=1, max_length=16)]
    outputs: Annotated[list[TensorSpec], Field(min_length=1, max_length=64)]
    preprocessing: Preprocessing
    task: Task
    labels: Annotated[list[Label], Field(min_length=1, max_length=100_000)]
    postprocessor: Postprocessor


class PassRecord(ContractModel):
    name: Name
    config: dict[str, JsonValue]


class LatencyMeasure(ContractModel):
    p50_ms: Annotated[float, Field(ge=0)]
    p95_ms: Annotated[float, Field(ge=0)]
    host: Text
    threads: Annotated[int, Field(ge=1, le=1024)]


class Metrics(ContractModel):
    """Compile-time measurements; ``float_*`` for the source model, ``compiled_*`` for the bundle."""

    float_metrics: dict[str, float] = {}
    compiled_metrics: dict[str, float] = {}
    float_size_bytes: Count
    compiled_size_bytes: Count
    float_latency: LatencyMeasure | None = None
    compiled_latency: LatencyMeasure | None = None


class Golden(ContractModel):
    """Reference inputs and the outputs the compiled model must give (stored in ``file``, .npz)."""

    file: Annotated[str, Field(min_length=1, max_length=256)]
    cases: Annotated[int, Field(ge=1, le=MAX_INT)]
    atol: Annotated[float, Field(ge=0)]
    rtol: Annotated[float, Field(ge=0)]


class ReferenceProfile(ContractModel):
    """Statistics on the calibration inputs and the model's outputs on them, for drift detection."""

    samples: Annotated[int, Field(ge=1, le=MAX_INT)]
    input_histograms: dict[str, Histogram] = {}
    score_histogram: Histogram | None = None
    prediction_rates: dict[Label, Annotated[float, Field(ge=0)]] = {}


class Manifest(Message):
    schema_: Literal["coldchain.manifest/v1", "coldchain.manifest/v2", "coldchain.manifest/v3",
                     "coldchain.manifest/v4"] = Field(
        MANIFEST_SCHEMA, alias="schema")
    stream: Stream | None = None  # required from v2 on; see stream_name
    boards: Annotated[list[Identifier], Field(min_length=1, max_length=32)] | None = None  # required from v3 on
    sequence: Count  # monotonic within the stream: a device refuses an older one (anti-rollback)
    created_at: datetime = Field(default_factory=utc_now)
    model: ModelSource
    target: TargetInfo
    files: Annotated[list[FileEntry], Field(min_length=1, max_length=256)]
    io: IOSpec
    passes: list[PassRecord] = []
    toolchain: dict[Name, Name] = {}
    calibration_sha256: Sha256 | None = None
    metrics: Metrics
    golden: Golden
    reference: ReferenceProfile | None = None

    model_config = {**Message.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _versioned_fields(self) -> Manifest:
        version = MANIFEST_SCHEMAS.index(self.schema_) + 1
        for field, since in (("stream", 2), ("boards", 3)):
            given = getattr(self, field) is not None
            if version >= since and not given:
                raise ValueError(f"a {self.schema_} manifest must name its {field}")
            if version < since and given:
                raise ValueError(f"a {self.schema_} manifest has no {field} field (it came with "
                                 f"coldchain.manifest/v{since})")
        if version < 4 and self.io.preprocessing.needs_v4:
            raise ValueError(f"a {self.schema_} manifest cannot describe short-side resizing, centre crops or "
                             f"other interpolations (they came with {MANIFEST_SCHEMA})")
        return self

    @model_serializer(mode="wrap")
    def _without_later_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An older manifest dumps as its compiler wrote it: without the keys later versions added."""
        data: dict[str, Any] = handler(self)
        for field in ("stream", "boards"):
            if data.get(field) is None:
                data.pop(field, None)
        return data

    def board_refusal(self, board: str | None) -> str | None:
        """Why a device of ``board`` must not run this bundle, or None. A manifest before v3 names no
        boards, and a device that does not know its board cannot be checked: both pass."""
        if self.boards is None or board in (None, UNKNOWN_BOARD) or board in self.boards:
            return None
        boards = ", ".join(self.boards)
        return f"the bundle is for boards {boards} (target {self.target.name}); this device is a {board}"

    @property
    def stream_name(self) -> str:
        """The stream whose sequences this one is compared with: v1 manifests belong to their model's."""
        return self.stream or self.model.name

    @model_validator(mode="after")
    def _files(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("file paths in a manifest must be unique")
        if self.golden.file not in paths:
            raise ValueError(f"golden file {self.golden.file!r} is not listed in files")
        return self

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    @property
    def model_file(self) -> FileEntry:
        return next(f for f in self.files if f.role == "model")


def schema_for(io: IOSpec) -> str:
    """The oldest manifest schema that describes ``io`` (and names boards): what the compiler writes."""
    return MANIFEST_SCHEMA if io.preprocessing.needs_v4 else V3_SCHEMA


def dump_manifest(manifest: Manifest) -> bytes:
    """Canonical bytes of a manifest: these are what gets signed and written as manifest.json."""
    data: dict[str, Any] = manifest.model_dump(mode="json", by_alias=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_manifest(payload: bytes) -> Manifest:
    """Parse manifest bytes, with a readable error for anything wrong."""
    return decode(Manifest, payload, limit=MAX_MANIFEST_BYTES)
