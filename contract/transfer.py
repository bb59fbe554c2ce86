"""Artifact transfer: binary chunk frames, missing-chunk reports, and chunk hashing.

A chunk travels as one binary MQTT payload, so a 128 KiB chunk costs 128 KiB plus a small
header rather than a third more for base64::

    b"CCK1" | u32 big-endian header length | header JSON | chunk bytes

The header (a :class:`ChunkHeader`) names the artifact, the chunk index and count, and the
sha256 of the chunk bytes; decoding checks all of them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from contract.base import MAX_INT, Count, Identifier, Message, Sha256, decode
from contract.errors import PayloadError

DEFAULT_CHUNK_SIZE = 128 * 1024
MAX_CHUNK_SIZE = 1024 * 1024
MAGIC = b"CCK1"
_LEN = struct.Struct(">I")
_MAX_HEADER = 1024
MAX_RANGES = 4096  # in one missing-chunks report


class ChunkHeader(Message):
    sha256: Sha256  # of the whole artifact
    index: Count
    count: Annotated[int, Field(gt=0, le=MAX_INT)]
    size: Annotated[int, Field(ge=0, le=MAX_CHUNK_SIZE)]
    chunk_sha256: Sha256

    @model_validator(mode="after")
    def _in_range(self) -> ChunkHeader:
        if self.index >= self.count:
            raise ValueError(f"chunk index {self.index} is outside 0..{self.count - 1}")
        return self


@dataclass(frozen=True)
class Chunk:
    header: ChunkHeader
    data: bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_hashes(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[str]:
    """sha256 of every ``chunk_size`` slice of ``data`` (one hash for empty data)."""
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size {chunk_size} must be within 1..{MAX_CHUNK_SIZE}")
    if not data:
        return [sha256_hex(b"")]
    return [sha256_hex(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]


def encode_chunk(artifact_sha256: str, index: int, count: int, data: bytes) -> bytes:
    header = ChunkHeader(sha256=artifact_sha256, index=index, count=count, size=len(data),
                         chunk_sha256=sha256_hex(data))
    head = header.to_json()
    return MAGIC + _LEN.pack(len(head)) + head + data


def decode_chunk(payload: bytes) -> Chunk:
    """Parse and check a chunk frame; a wrong length or hash raises PayloadError."""
    if len(payload) < len(MAGIC) + _LEN.size or not payload.startswith(MAGIC):
        raise PayloadError("chunk payload does not start with the CCK1 frame header: not a coldchain chunk")
    (head_len,) = _LEN.unpack_from(payload, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if head_len > _MAX_HEADER or start + head_len > len(payload):
        raise PayloadError(f"chunk header length {head_len} is impossible for a {len(payload)}-byte payload")
    header = decode(ChunkHeader, payload[start : start + head_len])
    data = payload[start + head_len :]
    if len(data) != header.size:
        raise PayloadError(f"chunk {header.index} carries {len(data)} bytes but its header says {header.size}")
    if sha256_hex(data) != header.chunk_sha256:
        raise PayloadError(f"chunk {header.index} of artifact {header.sha256[:12]} is corrupt: its sha256 "
                           "does not match the header; it will be requested again")
    return Chunk(header, data)


Range = tuple[Count, Count]  # [start, end): chunk indices


class MissingChunks(Message):
    """A device's report of the chunks it still lacks, as half-open index ranges."""

    device_id: Identifier
    sha256: Sha256
    chunk_count: Annotated[int, Field(gt=0, le=MAX_INT)]
    ranges: Annotated[list[Range], Field(max_length=MAX_RANGES)]

    @model_validator(mode="after")
    def _ranges(self) -> MissingChunks:
        last = 0
        for start, end in self.ranges:
            if not last <= start < end <= self.chunk_count:
                raise ValueError(f"range [{start}, {end}) is empty, overlapping, unsorted or beyond "
                                 f"{self.chunk_count} chunks")
            last = end
        return self

    @classmethod
    def from_indices(cls, device_id: str, sha256: str, chunk_count: int, indices: list[int]) -> MissingChunks:
        ranges: list[Range] = []
        for i in sorted(set(indices)):
            if ranges and ranges[-1][1] == i:
                ranges[-1] = (ranges[-1][0], i + 1)
            else:
                ranges.append((i, i + 1))
        return cls(device_id=device_id, sha256=sha256, chunk_count=chunk_count, ranges=ranges)

    def indices(self) -> list[int]:
        return [i for start, end in self.ranges for i in range(start, end)]
