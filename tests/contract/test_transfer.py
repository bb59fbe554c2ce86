from __future__ import annotations

import hashlib
import os

import pytest

from contract.errors import PayloadError
from contract.transfer import MissingChunks, chunk_hashes, decode_chunk, encode_chunk

SHA = hashlib.sha256(b"artifact").hexdigest()


def test_chunk_round_trip_costs_little() -> None:
    data = os.urandom(128 * 1024)
    frame = encode_chunk(SHA, 2, 5, data)
    chunk = decode_chunk(frame)
    assert chunk.data == data
    assert (chunk.header.index, chunk.header.count, chunk.header.sha256) == (2, 5, SHA)
    assert len(frame) - len(data) < 400  # binary framing: no base64 blow-up


def test_flipped_byte_is_detected() -> None:
    frame = bytearray(encode_chunk(SHA, 0, 1, b"hello world"))
    frame[-1] ^= 0x01
    with pytest.raises(PayloadError, match="corrupt"):
        decode_chunk(bytes(frame))


@pytest.mark.parametrize("payload", [b"", b"CCK1", b"XXXX\x00\x00\x00\x02{}", b"CCK1\x00\x00\xff\xff{}"])
def test_malformed_frames(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_chunk(payload)


def test_truncated_frame() -> None:
    frame = encode_chunk(SHA, 0, 1, b"0123456789")
    with pytest.raises(PayloadError, match="carries 5 bytes but its header says 10"):
        decode_chunk(frame[:-5])


def test_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_chunk(SHA, 5, 5, b"x")


def test_chunk_hashes() -> None:
    data = bytes(range(256)) * 1000  # 256000 bytes
    hashes = chunk_hashes(data, 100_000)
    assert len(hashes) == 3
    assert hashes[2] == hashlib.sha256(data[200_000:]).hexdigest()
    assert chunk_hashes(b"") == [hashlib.sha256(b"").hexdigest()]


def test_missing_ranges() -> None:
    report = MissingChunks.from_indices("d1", SHA, 20, [7, 1, 2, 3, 19, 2])
    assert report.ranges == [(1, 4), (7, 8), (19, 20)]
    assert report.indices() == [1, 2, 3, 7, 19]
    with pytest.raises(ValueError, match="beyond"):
        MissingChunks(device_id="d1", sha256=SHA, chunk_count=5, ranges=[(3, 9)])
    with pytest.raises(ValueError, match="overlapping"):
        MissingChunks(device_id="d1", sha256=SHA, chunk_count=9, ranges=[(3, 5), (4, 6)])
