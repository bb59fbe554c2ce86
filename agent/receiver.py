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
from contract.bundle import RESERVE_BYTES, free_bytes
from contract.commands import ArtifactRef
from contract.transfer import MAX_RANGES, Chunk, MissingChunks


class Download:
    def __init__(self, data_dir: Path, ref: ArtifactRef) -> None:
        self.ref = ref
        self.dir = data_dir / "downloads" / ref.sha256
        self.part = self.dir / "artifact.part"
        self.bitmap_path = self.dir / "bitmap"
        self.hashes_path = self.dir / "hashes"  # each stored chunk's sha256 as it arrived (32 bytes a chunk)
        self.repaired: str | None = None  # what was found damaged and started again, for the job's history
        damage = self._damage()
        if damage is not None:
            if (self.dir / "ref.json").exists() or self.dir.exists():
                self.repaired = f"download state damaged ({damage}): started again"
            shutil.rmtree(self.dir, ignore_errors=True)
            need, free = ref.size + 32 * ref.chunk_count + RESERVE_BYTES, free_bytes(data_dir)
            if need > free:
                raise TransferError(f"not enough space to download the artifact: it needs {need} bytes with the "
                                    f"reserve, {free} are free in {data_dir}")
            self.dir.mkdir(parents=True, exist_ok=True)
            for path, size in ((self.part, ref.size), (self.hashes_path, 32 * ref.chunk_count)):
                with path.open("wb") as fh:
                    fh.truncate(size)
                    os.fsync(fh.fileno())
            atomic_write(self.bitmap_path, bytes(ref.chunk_count))
            atomic_write(self.dir / "ref.json", ref.model_dump_json().encode())
        self._bitmap = bytearray(self.bitmap_path.read_bytes())

    def _damage(self) -> str | None:
        """Why the persisted download cannot be continued (None: it can, or there is none yet)."""
        if not (self.dir / "ref.json").exists():
            return "no ref.json" if self.dir.exists() else "new"
        try:
            stored = ArtifactRef.model_validate_json((self.dir / "ref.json").read_bytes())
        except (OSError, ValueError) as exc:
            return f"ref.json unreadable: {type(exc).__name__}"
        data = self.part if self.part.is_file() else self.dir / "artifact"  # (renamed once whole)
        sizes = {"bitmap": (self.bitmap_path, self.ref.chunk_count), "artifact.part": (data, self.ref.size),
                 "chunk hashes": (self.hashes_path, 32 * self.ref.chunk_count)}
        wrong = [name for name, (path, size) in sizes.items() if not path.is_file() or path.stat().st_size != size]
        if stored != self.ref:
            return "ref.json names another artifact"
        if wrong:
            return f"{', '.join(wrong)} missing or of the wrong size"
        if self.bitmap_path.read_bytes().strip(b"\0\1"):  # one byte a chunk, 0 or 1: anything else never completes
            return "bitmap garbled"
        return None

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

    def missing_ranges(self, limit: int = MAX_RANGES) -> list[tuple[int, int]]:
        """The first ``limit`` runs of chunks not stored yet, as half-open ranges (a scan of the
        bitmap: a 4 GiB artifact in 1 KiB chunks is not turned into a list of 4 million indices)."""
        ranges: list[tuple[int, int]] = []
        start = self._bitmap.find(0)
        while start != -1 and len(ranges) < limit:
            end = self._bitmap.find(1, start)
            end = len(self._bitmap) if end == -1 else end
            ranges.append((start, end))
            start = self._bitmap.find(0, end)
        return ranges

    def missing_report(self, device_id: str) -> MissingChunks:
        """What is missing, as one report: at most the contract's ``MAX_RANGES`` gaps, the first
        ones (more would not validate; the rest is asked for once these have come)."""
        return MissingChunks(device_id=device_id, sha256=self.ref.sha256, chunk_count=self.ref.chunk_count,
                             ranges=self.missing_ranges())

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
        for path, offset, data in ((self.part, header.index * self.ref.chunk_size, chunk.data),
                                   (self.hashes_path, header.index * 32, hashlib.sha256(chunk.data).digest())):
            with path.open("r+b") as fh:
                fh.seek(offset)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        self._bitmap[header.index] = 1
        atomic_write(self.bitmap_path, bytes(self._bitmap))
        return True

    def _damaged_on_disk(self) -> list[int]:
        """Chunks whose bytes on disk no longer have the hash they arrived with."""
        hashes = self.hashes_path.read_bytes()
        bad = []
        with self.part.open("rb") as fh:
            for index in range(self.ref.chunk_count):
                data = fh.read(self.ref.chunk_size)
                if hashlib.sha256(data).digest() != hashes[index * 32:(index + 1) * 32]:
                    bad.append(index)
        return bad

    def finished(self) -> Path | None:
        """The whole, checked artifact (finishing it if needed); None when chunks must be fetched again."""
        done = self.dir / "artifact"
        return done if done.is_file() else self.finish()

    def finish(self) -> Path | None:
        """Check the whole artifact's sha256; returns the finished file. None: chunks were found
        damaged on disk and will be fetched again. TransferError: what arrived was not the artifact."""
        if not self.complete:
            raise TransferError(f"{self.ref.chunk_count - self.received} chunks are still missing")
        digest = hashlib.sha256()
        with self.part.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != self.ref.sha256:
            damaged = self._damaged_on_disk()
            if damaged:  # the disk changed what arrived intact: fetch those chunks again, not the transport's fault
                for index in damaged:
                    self._bitmap[index] = 0
                atomic_write(self.bitmap_path, bytes(self._bitmap))
                self.repaired = f"chunks {damaged[:8]} were damaged on disk after they arrived: fetching them again"
                return None
            self._bitmap = bytearray(self.ref.chunk_count)
            atomic_write(self.bitmap_path, bytes(self._bitmap))
            raise TransferError(f"artifact {self.ref.sha256[:12]} does not match its sha256 although every chunk "
                                "matched its own hash: a chunk was tampered with on the way (or the artifact is "
                                "not the one announced); refused, nothing installed")
        done = self.dir / "artifact"
        os.replace(self.part, done)
        fsync_dir(self.dir)
        return done

    @staticmethod
    def remove(data_dir: Path, ref: ArtifactRef) -> None:
        """Delete a download's files without opening it (a failed or finished job's)."""
        shutil.rmtree(data_dir / "downloads" / ref.sha256, ignore_errors=True)



def to_ask(report: MissingChunks | None, quiet: float, stall_s: float, highest: int | None) -> MissingChunks | None:
    """What of a download's missing ``report`` to ask for after ``quiet`` seconds without a chunk.

    Chunks of a stream arrive in order, so while a stream may only be slow (quiet for less than
    ``stall_s``) only gaps *below* the highest chunk received are missing; chunks beyond it may
    still be queued at the broker or in this agent's inbox, and asking for them again would only
    add load where it is already high. After ``stall_s`` of silence everything lacking is asked for.
    """
    if report is not None and quiet < stall_s and highest is not None:
        gaps = [(start, min(end, highest)) for start, end in report.ranges if start < highest]
        return report.model_copy(update={"ranges": gaps}) if gaps else None
    return report
