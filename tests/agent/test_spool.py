from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.errors import SpoolError
from agent.spool import Spool


def fill(spool: Spool, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        seq, _ = spool.append(lambda seq: f"window {seq}".encode())
        seqs.append(seq)
    return seqs


def test_windows_stay_until_the_cloud_confirms_them_even_across_restarts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=10)
    fill(spool, 5)
    assert spool.confirm(spool.epoch, [(1, 2), (4, 4)]) == 3
    epoch = spool.epoch
    spool.close()
    reopened = Spool(tmp_path / "spool.db", max_windows=10)
    assert reopened.epoch == epoch  # the same spool: the same epoch
    assert [(p.seq, p.payload) for p in reopened.pending()] == [(3, b"window 3"), (5, b"window 5")]
    assert reopened.append(lambda seq: b"x")[0] == 6  # sequence numbers never repeat within an epoch


def test_an_ack_of_another_epoch_deletes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=10)
    fill(spool, 3)
    assert spool.confirm("someone-else", [(1, 3)]) == 0
    assert spool.confirm(None, [(1, 3)]) == 0  # a new spool held no window from before epochs
    assert spool.size == 3


def test_pending_after_skips_what_is_in_flight(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=10)
    fill(spool, 5)
    assert [p.seq for p in spool.pending(limit=2, after=2)] == [3, 4]


def test_a_rebuilt_spool_starts_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path, max_windows=10)
    fill(spool, 3)
    old = spool.epoch
    spool.close()
    path.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)  # a garbled page
    rebuilt = Spool(path, max_windows=10)
    assert rebuilt.recovered is not None and "damaged" in rebuilt.recovered
    assert rebuilt.epoch != old  # its seqs start again at 1: (epoch, seq) never collides with stored windows
    assert rebuilt.append(lambda seq: b"x")[0] == 1
    assert len({Spool(tmp_path / f"s{i}.db", 1).epoch for i in range(20)}) == 20


def test_a_spool_from_before_epochs_keeps_its_windows_and_takes_their_acks(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)  # what the agent before epochs left behind
    db.executescript("CREATE TABLE windows (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
                     "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                     "INSERT INTO windows VALUES (7, x'00'), (8, x'00');"
                     "INSERT INTO counters VALUES ('seq', 8);")
    db.commit()
    db.close()
    spool = Spool(path, max_windows=10)
    assert spool.confirm(None, [(7, 7)]) == 1  # the cloud acks windows without an epoch as epoch None
    fill(spool, 1)  # seq 9: of the new epoch
    assert spool.confirm(None, [(9, 9)]) == 0
    assert spool.confirm(spool.epoch, [(8, 9)]) == 1  # window 8 was sent without the epoch
    assert [p.seq for p in spool.pending()] == [8]


def test_bounded_and_eviction_is_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_windows=3)
    evicted = [spool.append(lambda seq: b"x")[1] for _ in range(5)]
    assert evicted == [0, 0, 0, 1, 1]
    assert spool.size == 3 and spool.evicted == 2
    assert [p.seq for p in spool.pending()] == [3, 4, 5]  # the oldest went first
    spool.confirm(spool.epoch, [(3, 5)])
    assert spool.evicted == 2  # confirmed windows are not drops


def test_bad_bound() -> None:
    with pytest.raises(SpoolError):
        Spool(Path("/tmp/never-created.db"), max_windows=0)


def test_a_window_that_cannot_be_built_leaves_no_gap_in_the_seqs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", 100)

    def broken(seq: int) -> bytes:
        raise ValueError("a field out of bounds")

    assert spool.append(lambda seq: b"w%d" % seq) == (1, 0)
    with pytest.raises(ValueError):
        spool.append(broken)
    assert spool.append(lambda seq: b"w%d" % seq) == (2, 0)  # not 3: no seq was taken by the failed one
    assert [p.seq for p in spool.pending()] == [1, 2]
    spool.close()


def test_windows_older_than_the_spools_ttl_are_deleted_and_counted(tmp_path: Path) -> None:
    """Issue 16: the device's spool honours its own TTL (a household's telemetry is not kept on the
    device for ever while the cloud is unreachable); what expired is counted like an eviction, so the
    cloud hears of it in the next windows."""
    now = [1_000.0]
    spool = Spool(tmp_path / "spool.db", max_windows=100, max_age_s=600, clock=lambda: now[0])
    fill(spool, 3)  # stored at t = 1000
    now[0] = 1_300.0
    fill(spool, 2)  # stored at t = 1300
    now[0] = 1_601.0  # the first three are past 600 s, the last two are not
    assert spool.expire() == 3
    assert [p.seq for p in spool.pending()] == [4, 5]
    assert spool.evicted == 3 and spool.expired == 3
    now[0] = 1_950.0
    seq, dropped = spool.append(lambda seq: b"late")  # every write also drops what expired
    assert (seq, dropped) == (6, 2) and [p.seq for p in spool.pending()] == [6]
    spool.close()
    reopened = Spool(tmp_path / "spool.db", max_windows=100, max_age_s=600, clock=lambda: now[0])
    assert reopened.expired == 5 and [p.seq for p in reopened.pending()] == [6]


def test_a_spool_from_before_the_ttl_keeps_its_windows_from_when_it_is_opened(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "spool.db")
    db.executescript("CREATE TABLE windows (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
                     "INSERT INTO windows VALUES (1, x'00');")
    db.close()
    now = [5_000.0]
    spool = Spool(tmp_path / "spool.db", max_windows=100, max_age_s=600, clock=lambda: now[0])
    assert spool.expire() == 0 and spool.size == 1  # its age counts from this open
    now[0] = 5_601.0
    assert spool.expire() == 1
