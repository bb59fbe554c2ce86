"""The local API's socket file: created only where nobody else can swap it, removed only if it is
still the agent's own (docs/firmware.md, "Configuration").

A socket file left by an agent that died is replaced; one another process serves is not; anything
else at the path (a regular file, a symlink, a folder) is never replaced or deleted. A folder that
others may write without the sticky bit is refused: anyone could swap the socket for a symlink
between ``bind`` and ``chmod`` (which follows it) or take its place.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from agent.errors import LocalApiError

MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL
Inode = tuple[int, int]


def check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise LocalApiError(f"local API socket path {path} is longer than {MAX_SOCKET_PATH} bytes: "
                            "set local_api.socket to a shorter path")


def bind(path: Path, mode: int) -> tuple[socket.socket, Inode]:
    """A listening socket at ``path`` with permissions ``mode``, and the file's identity."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent.stat().st_mode
    except OSError as exc:
        raise LocalApiError(f"cannot create the folder of the local API socket {path}: {exc}") from exc
    if folder & stat.S_IWOTH and not folder & stat.S_ISVTX:
        raise LocalApiError(f"{path.parent} is a folder others may write (mode {stat.S_IMODE(folder):o}, "
                            "no sticky bit): put local_api.socket in a folder of the agent's own")
    remove_stale(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, mode)
        info = os.lstat(path)
        listener.listen(64)
    except OSError as exc:
        listener.close()
        raise LocalApiError(f"cannot serve the local API on {path}: {exc.strerror or exc}") from exc
    return listener, (info.st_dev, info.st_ino)


def remove_stale(path: Path) -> None:
    """A socket file left by an agent that died is removed; one another agent serves is not."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise LocalApiError(f"{path} exists and is not a socket: refusing to replace it")
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        try:
            path.unlink(missing_ok=True)  # nobody listens: stale
        except OSError as exc:
            raise LocalApiError(f"cannot remove the stale local API socket {path}: {exc.strerror}") from exc
        return
    finally:
        probe.close()
    raise LocalApiError(f"another process already serves the local API on {path}")


def remove_own(path: Path, inode: Inode | None) -> None:
    """The socket file goes with the server, only if it is still the one bound (never another file)."""
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == inode:
            path.unlink()
