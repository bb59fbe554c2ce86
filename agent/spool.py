"""The telemetry spool: every window is stored in SQLite before it is published and deleted only
when the cloud confirmed that it stored it (a ``TelemetryAck`` on the device's acks topic; the
broker's PUBACK is not enough: a broker drops what overflows its queues), so windows survive
broker outages, broker overload and agent restarts (Greengrass's spooler loses RAM-held messages
on restart and drops the oldest silently).

Each spool has an epoch, made when it is created: ``seq`` counts from 1 within it, so a spool
rebuilt after damage (a new epoch) never collides with windows the cloud already stored.

The spool is bounded: when full, the oldest windows are evicted and the eviction is counted,
and the count travels in the next windows (``Telemetry.spool.evicted``), never silently. It also
has a time to live (``limits.spool_max_age_s``, 10 days by default, like the cloud's raw windows):
a window older than that is deleted on the next write (or ``expire()``), counted as evicted too and,
on its own, as expired.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SpoolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL, stored_at REAL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def new_epoch() -> str:
    """When the spool was made (UTC) and 48 random bits: unique per device for its whole life."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(6)}"



@dataclass(frozen=True)
class Pending:
    seq: int
    payload: bytes


class Spool:
    def __init__(self, path: Path, max_windows: int, repair: bool = True, max_age_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_windows < 1:
            raise SpoolError("the spool must hold at least one window")
        if max_age_s is not None and max_age_s <= 0:
            raise SpoolError(f"the spool's time to live must be positive, not {max_age_s} s")
        self.max_windows = max_windows
        self.max_age_s = max_age_s
        self.clock = clock
        self.recovered: str | None = None  # what was repaired at open, for the agent to report once
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:  # a garbled page or header: set it aside, start an empty spool
            if not repair:
                raise SpoolError(f"the telemetry spool {path} is damaged: {exc}") from exc
            stamp = int(time.time())
            for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if part.exists():
                    part.replace(part.with_name(f"{part.name}.damaged-{stamp}"))
            self.recovered = (f"the telemetry spool was damaged ({exc}); set aside as {path.name}.damaged-{stamp}, "
                              "windows it held are lost, a new spool was started")
            try:
                self._db = self._open(path)
            except sqlite3.Error as again:
                raise SpoolError(f"cannot open a new telemetry spool {path}: {again}") from again
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open the telemetry spool {path}: {exc}") from exc
        self.epoch, self.legacy_upto = self._epoch()
        self._add_ttl()

    def _add_ttl(self) -> None:
        """A spool from before the TTL gets its column and index, and its windows a time now (their age
        counts from this open); a spool that has them is not written to."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(windows)")}
        indexed = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' "
                                   "AND name = 'windows_stored_at'").fetchone() is not None
        if "stored_at" in columns and indexed and self._db.execute(
                "SELECT 1 FROM windows WHERE stored_at IS NULL LIMIT 1").fetchone() is None:
            return
        with self._tx() as db:
            if "stored_at" not in columns:
                db.execute("ALTER TABLE windows ADD COLUMN stored_at REAL")
            # every write deletes what expired: by the index, not by reading the whole spool
            db.execute("CREATE INDEX IF NOT EXISTS windows_stored_at ON windows (stored_at)")
            db.execute("UPDATE windows SET stored_at = ? WHERE stored_at IS NULL", (self.clock(),))

    def _epoch(self) -> tuple[str, int]:
        """This spool's epoch, made on first open. A spool from before epochs keeps its windows:
        those up to its last seq were sent without an epoch, and are confirmed by acks without one."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()
        if row is not None:
            return str(row[0]), self._counter("legacy_upto")
        epoch, legacy = new_epoch(), self._counter("seq")
        with self._tx() as db:
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (epoch,))
            db.execute("INSERT OR REPLACE INTO counters VALUES ('legacy_upto', ?)", (legacy,))
        return epoch, legacy

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
        except sqlite3.Error:
            db.close()
            raise
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # a full disk may already have ended the transaction
                self._db.execute("ROLLBACK")
            raise SpoolError(f"telemetry spool write failed: {exc}") from exc
        except BaseException:  # whatever else ended the work (a window that cannot be built): undo it
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def last_seq(self) -> int:
        """The seq of the newest window stored in this epoch (0: none yet); seqs never repeat in it."""
        return self._counter("seq")

    def append(self, build: Callable[[int], bytes]) -> tuple[int, int]:
        """Store the next window: ``build(seq)`` makes it, and its seq is taken in the same
        transaction, so a window that cannot be built or stored leaves no gap in the seqs (a gap
        would look like a window lost on the way). Returns (seq, windows evicted to make room)."""
        with self._tx() as db:
            seq = self._counter("seq") + 1
            db.execute("INSERT OR REPLACE INTO counters VALUES ('seq', ?)", (seq,))
            evicted = self._insert(db, seq, build(seq))
        return seq, evicted

    def put(self, seq: int, payload: bytes) -> int:
        """Store a window; returns how many old windows were evicted to make room."""
        with self._tx() as db:
            return self._insert(db, seq, payload)

    def _insert(self, db: sqlite3.Connection, seq: int, payload: bytes) -> int:
        expired = self._expire(db)
        db.execute("INSERT OR REPLACE INTO windows (seq, payload, stored_at) VALUES (?, ?, ?)",
                   (seq, payload, self.clock()))
        (count,) = db.execute("SELECT COUNT(*) FROM windows").fetchone()
        evict = max(0, int(count) - self.max_windows)
        if evict:
            db.execute("DELETE FROM windows WHERE seq IN (SELECT seq FROM windows ORDER BY seq LIMIT ?)", (evict,))
            self._add(db, "evicted", evict)
        return evict + expired

    def _add(self, db: sqlite3.Connection, counter: str, count: int) -> None:
        db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (counter, self._counter(counter) + count))

    def _expire(self, db: sqlite3.Connection) -> int:
        if self.max_age_s is None:
            return 0
        gone = int(db.execute("DELETE FROM windows WHERE stored_at < ?", (self.clock() - self.max_age_s,)).rowcount)
        if gone:
            self._add(db, "evicted", gone)
            self._add(db, "expired", gone)
        return gone

    def expire(self) -> int:
        """Delete the windows older than the spool's time to live; returns how many (counted)."""
        with self._tx() as db:
            return self._expire(db)

    def pending(self, limit: int = 100, after: int = 0) -> list[Pending]:
        """The oldest ``limit`` windows with a seq above ``after``."""
        rows = self._db.execute("SELECT seq, payload FROM windows WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after, limit)).fetchall()
        return [Pending(int(seq), bytes(payload)) for seq, payload in rows]

    def confirm(self, epoch: str | None, ranges: list[tuple[int, int]]) -> int:
        """The cloud stored windows ``ranges`` (inclusive) of ``epoch``: only now are they deleted.
        An ack of another epoch (a spool set aside) deletes nothing. Returns how many were deleted."""
        if epoch is None:  # windows sent before this spool had an epoch
            ranges = [(first, min(last, self.legacy_upto)) for first, last in ranges if first <= self.legacy_upto]
        elif epoch == self.epoch:  # seqs up to legacy_upto belong to the windows without an epoch
            ranges = [(max(first, self.legacy_upto + 1), last) for first, last in ranges if last > self.legacy_upto]
        else:
            return 0
        deleted = 0
        with self._tx() as db:
            for first, last in ranges:
                deleted += db.execute("DELETE FROM windows WHERE seq BETWEEN ? AND ?", (first, last)).rowcount
        return deleted

    @property
    def size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM windows").fetchone()[0])

    @property
    def evicted(self) -> int:
        """Windows dropped unsent: evicted for room or expired."""
        return self._counter("evicted")

    @property
    def expired(self) -> int:
        """Windows dropped unsent because they outlived the spool's time to live."""
        return self._counter("expired")

    def close(self) -> None:
        self._db.close()
