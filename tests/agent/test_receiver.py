from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.errors import TransferError
from agent.receiver import Download
from contract.commands import ArtifactRef
from contract.errors import PayloadError
from contract.transfer import decode_chunk, encode_chunk

CHUNK = 4096


def _artifact(size: int = 5 * CHUNK + 100) -> tuple[bytes, ArtifactRef, list[bytes]]:
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    count = -(-size // CHUNK)
    ref = ArtifactRef(sha256=sha, size=size, chunk_size=CHUNK, chunk_count=count, group="eu")
    frames = [encode_chunk(sha, i, count, data[i * CHUNK:(i + 1) * CHUNK]) for i in range(count)]
    return data, ref, frames


def test_resume_after_restart_fetches_only_missing_chunks(tmp_path: Path) -> None:
    data, ref, frames = _artifact()
    first = Download(tmp_path, ref)
    for i in (0, 2, 5):
        assert first.accept(decode_chunk(frames[i]))
    assert not first.accept(decode_chunk(frames[2]))  # duplicate from the group topic: ignored
    del first  # "restart"
    again = Download(tmp_path, ref)
    assert again.received == 3 and again.missing() == [1, 3, 4]
    assert again.missing_report("fridge-1").ranges == [(1, 2), (3, 5)]
    for i in again.missing():
        again.accept(decode_chunk(frames[i]))
    assert again.finish().read_bytes() == data


def test_tampered_chunk_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    _, ref, frames = _artifact()
    bad = bytearray(frames[1])
    bad[-1] ^= 1
    with pytest.raises(PayloadError, match="corrupt"):
        decode_chunk(bytes(bad))
    assert Download(tmp_path, ref).missing() == list(range(ref.chunk_count))


def test_chunk_of_another_artifact(tmp_path: Path) -> None:
    _, ref, _ = _artifact()
    _, _, other = _artifact()
    with pytest.raises(TransferError, match="not to this download"):
        Download(tmp_path, ref).accept(decode_chunk(other[0]))


def test_whole_file_mismatch_restarts(tmp_path: Path) -> None:
    data, ref, _ = _artifact()
    fake = ref.model_copy(update={"sha256": hashlib.sha256(b"other").hexdigest()})
    download = Download(tmp_path, fake)
    count = ref.chunk_count
    for i in range(count):
        download.accept(decode_chunk(encode_chunk(fake.sha256, i, count, data[i * CHUNK:(i + 1) * CHUNK])))
    with pytest.raises(TransferError, match="tampered with"):
        download.finish()
    assert Download(tmp_path, fake).received == 0


def test_finish_needs_every_chunk(tmp_path: Path) -> None:
    _, ref, frames = _artifact()
    download = Download(tmp_path, ref)
    download.accept(decode_chunk(frames[0]))
    with pytest.raises(TransferError, match="5 chunks are still missing"):
        download.finish()


def test_a_download_with_more_gaps_than_a_report_holds_asks_for_the_first_ones(tmp_path: Path) -> None:
    """Found while building the fault harness's fuzz row (benchmarks/faults/fuzz.py): a report holds
    at most 4096 ranges, and a download with more gaps (every other chunk of 10,000 lost) raised a
    pydantic ValidationError out of the agent's repair step, which its loop does not catch: the
    agent died, and after a restart died again at the same report."""
    size = 10_000 * 1024
    ref = ArtifactRef(sha256="ab" * 32, size=size, chunk_size=1024, chunk_count=10_000)
    Download(tmp_path, ref).bitmap_path.write_bytes(b"\1\0" * 5_000)  # chunks 0, 2, 4, ... arrived
    report = Download(tmp_path, ref).missing_report("fridge-1")  # (after a restart)
    assert len(report.ranges) == 4096 and report.ranges[:2] == [(1, 2), (3, 4)]
    assert report.ranges[-1] == (8191, 8192)  # the rest is asked for once these have come
