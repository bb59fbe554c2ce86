"""Start a real Mosquitto with a given config and wait until it listens."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def binary() -> str:
    """The mosquitto executable, or skip the test with what to do."""
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(path).exists():
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it from apt)")
    return path


def start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Mosquitto and return once it accepts connections on ``port``."""
    process = subprocess.Popen([binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    pytest.fail("mosquitto did not start listening")


@contextmanager
def running(conf: Path, port: int) -> Iterator[None]:
    process = start(conf, port)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
