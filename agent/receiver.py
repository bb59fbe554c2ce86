"""Receiving an artifact in chunks, resumable across restarts (unlike AWS IoT OTA's in-memory bitmap).

Under ``<data_dir>/downloads/<sha256>/``: ``artifact.part`` (pre-sized to the artifact),
``bitmap`` (one byte per chunk, 1 = written and fsynced) and ``ref.json`` (the ArtifactRef).
A chunk is written at its offset and fsynced *before* its bitmap byte is set and fsynced, so
after a crash the bitmap never claims a chunk that is not on disk; a chunk whose bit is
missing is simply fetched again. Every chunk's hash is checked on arrival (the frame carries
it) and the whole file's sha256 at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from agent.errors import TransferError
from agent.slots import atomic_write, fsync_dir
from contract.commands import ArtifactRef
from contract.transfer import Chunk, MissingChunks


class Download:
    def __init__(self, data_dir: Path, ref: ArtifactRef) -> None:
        self.ref = ref
        self.dir = data_dir / "downloads" / ref.sha256
        self.part = self.dir / "artifact.part"
        self.bitmap_path = self.dir / "bitmap"
        if not (self.dir / "ref.json").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            with self.part.open("wb") as fh:
                fh.truncate(ref.size)
                os.fsync(fh.fileno())
            atomic_write(self.bitmap_path, bytes(ref.chunk_count))
            atomic_write(self.dir / "ref.json", ref.model_dump_json().encode())
        else:
            stored = ArtifactRef.model_validate_json((self.dir / "ref.json").read_text())
            if stored != ref:
                raise TransferError(f"a different download of artifact {ref.sha256[:12]} is in progress")
        self._bitmap = bytearray(self.bitmap_path.read_bytes())
        if len(self._bitmap) != ref.chunk_count:
            raise TransferError(f"download bitmap of {ref.sha256[:12]} is damaged; delete {self.dir} to restart")

    @property
    def received(self) -> int:
        return sum(self._bitmap)

    @property
    def complete(self) -> bool:
        return self.received == self.ref.chunk_count

    def has(self, index: int) -> bool:
        return bool(self._bitmap[index])

    def missing(self) -> list[int]:
        return [i for i, bit in enumerate(self._bitmap) if not bit]

    def missing_report(self, device_id: str) -> MissingChunks:
        return MissingChunks.from_indices(device_id, self.ref.sha256, self.ref.chunk_count, self.missing())

    def accept(self, chunk: Chunk) -> bool:
        """Store a decoded (hash-checked) chunk; False when it was already stored (a duplicate)."""
        header = chunk.header
        if header.sha256 != self.ref.sha256 or header.count != self.ref.chunk_count:
            raise TransferError(f"chunk {header.index} belongs to artifact {header.sha256[:12]} "
                                f"({header.count} chunks), not to this download")
        expected = min(self.ref.chunk_size, self.ref.size - header.index * self.ref.chunk_size)
        if len(chunk.data) != expected:
            raise TransferError(f"chunk {header.index} has {len(chunk.data)} bytes, expected {expected}")
        if self._bitmap[header.index]:
            return False
        with self.part.open("r+b") as fh:
            fh.seek(header.index * self.ref.chunk_size)
            fh.write(chunk.data)
            fh.flush()
            os.fsync(fh.fileno())
        self._bitmap[header.index] = 1
        atomic_write(self.bitmap_path, bytes(self._bitmap))
        return True

    def finish(self) -> Path:
        """Check the whole artifact's sha256; returns the finished file, or restarts the bad chunks."""
        if not self.complete:
            raise TransferError(f"{self.ref.chunk_count - self.received} chunks are still missing")
        digest = hashlib.sha256()
        with self.part.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != self.ref.sha256:
            self._bitmap = bytearray(self.ref.chunk_count)
            atomic_write(self.bitmap_path, bytes(self._bitmap))
            raise TransferError(f"artifact {self.ref.sha256[:12]} does not match its sha256 although every chunk "
                                "matched its own hash: a chunk was tampered with on the way (or the artifact is "
                                "not the one announced); refused, nothing installed")
        done = self.dir / "artifact"
        os.replace(self.part, done)
        fsync_dir(self.dir)
        return done

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

