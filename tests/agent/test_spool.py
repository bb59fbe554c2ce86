from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import SpoolError
from agent.spool import Spool


def test_windows_survive_restart_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=10)
    for _ in range(3):
        seq = spool.next_seq()
        spool.put(seq, f"window {seq}".encode())
    spool.ack(1)
    spool.close()
    reopened = Spool(tmp_path / "spool.db", max_windows=10)
    assert [(p.seq, p.payload) for p in reopened.pending()] == [(2, b"window 2"), (3, b"window 3")]
    assert reopened.next_seq() == 4  # sequence numbers never repeat across restarts


def test_bounded_and_eviction_is_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=3)
    evicted = [spool.put(spool.next_seq(), b"x") for _ in range(5)]
    assert evicted == [0, 0, 0, 1, 1]
    assert spool.size == 3 and spool.evicted == 2
    assert [p.seq for p in spool.pending()] == [3, 4, 5]  # the oldest went first


def test_bad_bound() -> None:
    with pytest.raises(SpoolError):
        Spool(Path("/tmp/never-created.db"), max_windows=0)
