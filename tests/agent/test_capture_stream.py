"""A stream URL through OpenCV (the camera/RTSP/HTTP path of CaptureSource): a video served over
HTTP on 127.0.0.1 is read frame by frame; the end of the stream is a counted capture error."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import FrameError
from agent.frames import CaptureSource, open_source


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for i in range(6):
        frame = np.full((120, 160, 3), 40 * i, np.uint8)
        writer.write(frame)
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
    server.shutdown()


def test_http_stream_frames_then_a_capture_error(served: str) -> None:
    source = open_source("capture", served, True, 4096 * 4096)
    assert isinstance(source, CaptureSource)
    frames = []
    with pytest.raises(FrameError) as end:
        for _ in range(20):
            frames.append(source.read())
    assert len(frames) == 6 and frames[0].shape == (120, 160, 3)
    assert abs(float(frames[3].mean()) - 120) < 10  # the fourth frame, not garbage
    assert end.value.kind == "capture"
    source.close()


def test_stream_too_large_for_the_limit(served: str) -> None:
    source = CaptureSource(served, max_pixels=100 * 100)
    with pytest.raises(FrameError) as too_large:
        source.read()
    assert too_large.value.kind == "too_large"
