"""Image files the firmware names in an ``infer`` request (``image_path``), read safely.

Whoever may open the local API socket may ask the agent to read a file with the agent's own
permissions, so the agent reads only regular files inside the folders of ``local_api.image_dirs``
(none by default: ``image_path`` is refused, ``image_b64`` still works). The path is resolved
(symlinks, ``..``) before the check; the file is then opened from its folder down, one part at a
time, following no symlink (one swapped in after the check fails), and without blocking (a FIFO
would hold the agent loop forever); it must be a regular file by ``fstat`` of the open descriptor
(``/dev/zero`` and ``/proc`` files report size 0 and never end), and it is read up to the limit
and one byte more, so a file that grows after the check cannot make it read more.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from agent.errors import FrameError, ImagePathRefused


def read_image_file(name: str, allowed: Sequence[Path], limit: int) -> bytes:
    """The bytes of the image file ``name``: ImagePathRefused when the agent will not read it,
    FrameError (``too_large``, ``capture``) when it is too big or unreadable."""
    if not allowed:
        raise ImagePathRefused("image_path is off: no folder is listed in local_api.image_dirs of the agent "
                               "configuration (send the image as image_b64, or list its folder there)")
    path = Path(os.path.realpath(name))
    folders = [Path(os.path.realpath(folder)) for folder in allowed]
    folder = next((f for f in folders if path.is_relative_to(f) and path != f), None)
    if folder is None:
        raise ImagePathRefused(f"{name} (resolved: {path}) is outside the folders of local_api.image_dirs: "
                               f"{', '.join(str(f) for f in folders)}")
    try:
        fd = _open_below(folder, path.relative_to(folder).parts)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a part became a symlink after the path was resolved
            raise ImagePathRefused(f"{name} changed while it was opened (a symlink or a file where a folder "
                                   "was)") from exc
        raise FrameError("capture", f"cannot open {name}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImagePathRefused(f"{name} is not a regular file: only image files are read")
        if info.st_size > limit:
            raise FrameError("too_large", f"{name} is {info.st_size} bytes, above the {limit} allowed")
        data = bytearray()
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise FrameError("capture", f"cannot read {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FrameError("too_large", f"{name} grew above the {limit} bytes allowed while it was read")
    return bytes(data)


def _open_below(folder: Path, parts: tuple[str, ...]) -> int:
    """Open ``folder/parts...`` one part at a time, following no symlink below ``folder``: a part
    swapped for a symlink after the path was resolved fails (ELOOP, or ENOTDIR) instead of leading
    out of the folder. Opened without blocking (a FIFO would wait for a writer)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = below
        return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
