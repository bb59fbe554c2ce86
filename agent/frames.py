"""Frame sources: a camera (``/dev/videoN`` or an index), a folder of images (looping), a file, or
an RTSP/HTTP URL. A bad frame raises FrameError with a kind (``empty``, ``truncated``,
``corrupt``, ``format``, ``too_large``, ``channels``, ``depth``, ``capture``) that the loop counts and
skips; a source never stops the loop because of one frame. A finite source that has given every
frame raises SourceEnded: the agent reports that once and goes on serving commands.

While no bundle is active the agent reads no frame: it only ``probe()``s the source (``check_source``:
the folder or file is there and readable, the camera's device node exists), so an idle agent never
loads OpenCV or numpy and a finite source keeps its frames for the model that comes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import FrameError, SourceEnded
from agent.preprocess import check_frame

if TYPE_CHECKING:
    import cv2
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    cv2 = lazy("cv2")
    np = lazy("numpy")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# OpenCV's own ceiling on what it allocates for one image (read once, when cv2 is first imported):
# the largest frame the agent's configuration allows, instead of OpenCV's default of 2^30 pixels
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(8192 * 8192))


_MAGIC = (b"\x89PNG", b"\xff\xd8", b"BM", b"RIFF")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The first frame header's size, walking the markers as libjpeg does: bytes that are not a
    marker are skipped, and so are fill bytes (0xFF before a marker)."""
    i = 2
    while i + 1 < len(data):
        if data[i] != 0xFF or data[i + 1] == 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0xD8, 0x01, 0x00) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA) or i + 4 > len(data):  # the image ends or its data starts before any size
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header, without decoding the pixels; None for
    any other format, or a header it cannot be read from."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data.startswith(b"BM") and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", data[18:22])
            return width, height
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def decode(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Bytes of an image file -> BGR uint8, or FrameError naming what is wrong. Only formats whose
    size is read from the header before decoding are accepted (JPEG, PNG, BMP, WebP): a small file
    declaring a huge image is refused without allocating it."""
    if not data:
        raise FrameError("empty", "the frame has zero bytes")
    size = _header_size(data)
    if size is None and data.startswith(_MAGIC):
        raise FrameError("corrupt", "the image's header gives no size (it is damaged)")
    if size is None:
        raise FrameError("format", "the frame is not a JPEG, PNG, BMP or WebP image")
    if size[0] * size[1] > max_pixels:
        raise FrameError("too_large", f"the frame claims {size[0]}x{size[1]} pixels, above the limit of {max_pixels}")
    if data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-64:]:
        raise FrameError("truncated", "the JPEG has no end-of-image marker: the file was cut short")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own pixel ceiling (OPENCV_IO_MAX_IMAGE_PIXELS)
        raise FrameError("too_large", f"the frame was refused by the decoder: {str(exc).strip()[-200:]}") from exc
    if image is None:
        raise FrameError("corrupt", "the frame is not a decodable image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise FrameError("too_large", f"the frame has {image.shape[1]}x{image.shape[0]} pixels, above the limit")
    return check_frame(image)


def check_source(kind: str, location: str) -> bool:
    """The source's health without reading a frame (nothing is decoded, nothing heavy imported):
    FrameError("capture") naming what is wrong, else whether anything could be checked (a stream
    URL, or a camera named otherwise than by its device node or index, cannot be without opening it)."""
    if kind == "folder":
        what, path = "frame folder", Path(location)
        if not path.is_dir():
            raise FrameError("capture", f"frame folder {path} does not exist")
    elif kind == "file":
        what, path = "frame file", Path(location)
        if not path.is_file():
            raise FrameError("capture", f"frame file {path} does not exist")
    elif kind != "url" and (location.isdigit() or location.startswith("/")):  # a camera: /dev/videoN or its index N
        what, path = "camera", Path(f"/dev/video{location}" if location.isdigit() else location)
        if not path.exists():
            raise FrameError("capture", f"camera {path} is not present")
    else:
        return False
    if not os.access(path, os.R_OK):
        raise FrameError("capture", f"{what} {path} is not readable by this user")
    return True


class FrameSource(Protocol):
    name: str

    def read(self) -> npt.NDArray[np.uint8]: ...

    def probe(self) -> bool:
        """The source's health without a frame: FrameError if it is faulty, else whether it was checked."""

    def close(self) -> None: ...


class FolderSource:
    """Images of a folder in name order; loops when ``loop`` (a fixed camera replaying a day)."""

    def __init__(self, folder: Path, loop: bool = True, max_pixels: int = 4096 * 4096, start: int = 0) -> None:
        self.name = str(folder)
        check_source("folder", self.name)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FrameError("capture", f"frame folder {folder} holds no images")
        start %= len(files)  # simulated fleets: each device starts at another photo
        self.files = files[start:] + files[:start]
        self.loop, self.max_pixels = loop, max_pixels
        self._order: Iterator[Path] = iter(self.files)

    def read(self) -> npt.NDArray[np.uint8]:
        path = next(self._order, None)
        if path is None:
            if not self.loop:
                raise SourceEnded(f"frame folder {self.name}: all {len(self.files)} images were read "
                                  "(loop = false); inference waits for another source")
            self._order = iter(self.files)
            path = next(self._order)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FrameError("capture", f"cannot read {path.name}: {exc.strerror}") from exc
        return decode(data, self.max_pixels)

    def probe(self) -> bool:
        return check_source("folder", self.name)

    def close(self) -> None:
        pass


class FileSource(FolderSource):
    def __init__(self, path: Path, max_pixels: int = 4096 * 4096) -> None:
        self.name = str(path)
        self.files = [path]
        self.loop, self.max_pixels = True, max_pixels
        self._order = iter(self.files)

    def probe(self) -> bool:
        return check_source("file", self.name)


class CaptureSource:
    """A camera (``/dev/video0`` or ``0``) or a stream URL (``rtsp://``, ``http://``) through OpenCV."""

    def __init__(self, location: str, max_pixels: int = 4096 * 4096) -> None:
        self.name = location
        target: Any = int(location) if location.isdigit() else location
        self.capture = cv2.VideoCapture(target)
        self.max_pixels = max_pixels
        if not self.capture.isOpened():
            raise FrameError("capture", f"cannot open camera or stream {location}")

    def read(self) -> npt.NDArray[np.uint8]:
        ok, frame = self.capture.read()
        if not ok or frame is None:
            raise FrameError("capture", f"{self.name} returned no frame")
        if frame.shape[0] * frame.shape[1] > self.max_pixels:
            raise FrameError("too_large", f"{self.name} delivered {frame.shape[1]}x{frame.shape[0]} pixels")
        return check_frame(frame)

    def probe(self) -> bool:
        check_source("camera", self.name)
        if not self.capture.isOpened():
            raise FrameError("capture", f"camera or stream {self.name} is closed")
        return True

    def close(self) -> None:
        self.capture.release()


def open_source(kind: str, location: str, loop: bool, max_pixels: int) -> FrameSource:
    if kind == "folder":
        return FolderSource(Path(location), loop, max_pixels)
    if kind == "file":
        return FileSource(Path(location), max_pixels)
    return CaptureSource(location, max_pixels)
