"""Start a real Mosquitto with a given config and wait until it listens (``benchmarks.faults.broker``,
which the fault harness shares); skip the test when Mosquitto is not installed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.faults import broker


def binary() -> str:
    """The mosquitto executable, or skip the test with what to do."""
    path = broker.mosquitto_binary()
    if path is None:
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it from apt)")
    return path


def start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Mosquitto and return once it accepts connections on ``port``."""
    binary()
    try:
        return broker.start_mosquitto(conf, port)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@contextmanager
def running(conf: Path, port: int) -> Iterator[None]:
    process = start(conf, port)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
