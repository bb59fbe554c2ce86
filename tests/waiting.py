"""Waiting in tests for something that can be checked but not subscribed to (a row in the store,
a file, a thread's state): ``until`` polls a predicate at a fixed pace until it holds, and fails
naming what it waited for. The sleep only paces the loop; the loop ends on the condition. Where
an event exists (an MQTT message, a transport's published list), wait on that instead."""

from __future__ import annotations

import time
from collections.abc import Callable

PACE_S = 0.05


def until(done: Callable[[], bool], what: str, timeout: float = 60.0, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail()}")
        time.sleep(PACE_S)
