"""Fault injection for resilience tests: ``COLDCHAIN_FAULT=<point>`` makes the agent SIGKILL itself
when it reaches that point of a deploy (``COLDCHAIN_FAULT_AFTER=n``: at the n-th time). Unset in
production, where every call is a dictionary lookup that finds nothing."""

from __future__ import annotations

import os
import signal

POINTS = ("download", "after_verify", "mid_install", "mid_activation", "probation")
_seen: dict[str, int] = {}


def fault(point: str) -> None:
    if os.environ.get("COLDCHAIN_FAULT") != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(os.environ.get("COLDCHAIN_FAULT_AFTER", "1")):
        os.kill(os.getpid(), signal.SIGKILL)
