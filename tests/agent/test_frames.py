from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import FrameError, SourceEnded
from agent.frames import FolderSource, check_source, decode, open_source


def _jpeg(h: int = 48, w: int = 64) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((h, w, 3), 120, np.uint8))
    assert ok
    return data.tobytes()


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(("data", "kind"), [
    (b"", "empty"),
    (_jpeg()[:-300], "truncated"),
    (b"this is not an image at all", "format"),
    (_png_header(100_000, 100_000) + b"\x00" * 64, "too_large"),
    (b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9", "corrupt"),
])
def test_bad_frames_have_a_kind(data: bytes, kind: str) -> None:
    with pytest.raises(FrameError) as info:
        decode(data, max_pixels=4096 * 4096)
    assert info.value.kind == kind


def test_good_frames_of_other_depths_are_converted() -> None:
    assert decode(_jpeg(), 1 << 24).shape == (48, 64, 3)
    sixteen = cv2.imencode(".png", np.full((4, 4, 3), 40000, np.uint16))[1].tobytes()
    assert decode(sixteen, 1 << 24)[0, 0, 0] == 40000 >> 8
    grey = cv2.imencode(".png", np.full((4, 4), 9, np.uint8))[1].tobytes()
    assert decode(grey, 1 << 24).shape == (4, 4, 3)


def test_folder_loops_and_bad_files_do_not_stop_it(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "c.jpg").write_bytes(_jpeg()[:-200])
    source = open_source("folder", str(tmp_path), loop=True, max_pixels=1 << 24)
    kinds = []
    for _ in range(6):
        try:
            source.read()
            kinds.append("ok")
        except FrameError as exc:
            kinds.append(exc.kind)
    assert kinds == ["ok", "empty", "truncated"] * 2
    once = FolderSource(tmp_path, loop=False)
    for _ in range(3):
        with contextlib.suppress(FrameError):
            once.read()
    for _ in range(2):  # the end is a state, said again on every read, never a StopIteration
        with pytest.raises(SourceEnded, match="all 3 images were read"):
            once.read()


def test_missing_camera() -> None:
    with pytest.raises(FrameError, match="cannot open"):
        open_source("camera", "/dev/video99", True, 1 << 24)


def test_a_source_is_checked_without_reading_a_frame(tmp_path: Path) -> None:
    """What an idle agent watches (``check_source``): True when checked, FrameError naming the fault,
    False for what cannot be checked without opening it."""
    (tmp_path / "frames").mkdir()
    (tmp_path / "video3").write_bytes(b"")  # stands where a device node would
    assert check_source("folder", str(tmp_path / "frames")) and check_source("file", str(tmp_path / "video3"))
    assert check_source("camera", str(tmp_path / "video3"))
    assert not check_source("url", "rtsp://10.0.0.9/stream") and not check_source("camera", "rtsp://10.0.0.9/s")
    for kind, where, says in (("folder", tmp_path / "nope", "does not exist"),
                              ("file", tmp_path / "frames", "does not exist"),
                              ("camera", tmp_path / "video4", "is not present")):
        with pytest.raises(FrameError, match=says):
            check_source(kind, str(where))
