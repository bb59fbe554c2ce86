"""The write side of the telemetry rollups (``store.TelemetryRollup``): each window stored is
added to the sums of its device, bundle and minute of reception, in the same transaction. The
windows of a transaction are summed in memory first (``add``) and written once per row just
before it commits (a ``before_commit`` listener on every Session; a rollback drops them): one
insert-if-absent and one ``SELECT … FOR UPDATE`` (PostgreSQL; SQLite has one writer) per row and
batch, so concurrent ingestion workers add up instead of overwriting each other, and ingestion
does not pay a round trip per window. The read side is ``cloud.aggregate``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, event, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from cloud.store import CloudSecret, TelemetryRollup, TelemetryRow, now
from contract.base import MAX_INT
from contract.telemetry import Telemetry

log = logging.getLogger("coldchain.cloud.rollup")
PENDING = "coldchain.rollups"  # the key in Session.info
BACKFILLED = "rollups-backfilled"  # marker in cloud_secrets
Key = tuple[str, str, datetime]  # device, bundle sha256 ("" for none), minute


def bucket_of(when: datetime) -> datetime:
    """The minute ``when`` falls in (UTC)."""
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def hour_of(when: datetime) -> datetime:
    """The hour ``when`` falls in (UTC): the bucket of a compacted row (``cloud.compaction``)."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _cap(value: int) -> int:
    return min(value, MAX_INT)  # each count is bounded, their sums saturate


@dataclass
class Sums:
    windows: int = 0
    inferences: int = 0
    errors: int = 0
    frames_skipped: int = 0
    floats: list[float] = field(default_factory=lambda: [0.0] * 5)  # p50*n, p95*n, n, model p95*n, model n
    predictions: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # stat -> edges JSON -> counts
    inventory: dict[str, int] | None = None
    inventory_at: datetime | None = None

    def add(self, window: Telemetry) -> None:
        n = window.inferences
        self.windows, self.inferences = _cap(self.windows + 1), _cap(self.inferences + n)
        self.errors = _cap(self.errors + sum(window.errors.values()))
        self.frames_skipped = _cap(self.frames_skipped + sum(window.frames_skipped.values()))
        if window.latency_ms is not None and n:
            self.floats[0] += window.latency_ms.p50 * n
            self.floats[1] += window.latency_ms.p95 * n
            self.floats[2] += n
        if window.model_latency_ms is not None and n:
            self.floats[3] += window.model_latency_ms.p95 * n
            self.floats[4] += n
        self.predictions = _added(self.predictions, dict(window.predictions))
        for stat, h in window.input_stats.histograms.items():
            self.histograms = _binned(self.histograms, stat, json.dumps(list(h.edges)), list(h.counts))
        end = window.window_end if window.window_end.tzinfo is not None else window.window_end.replace(tzinfo=UTC)
        if window.inventory and (self.inventory_at is None or end >= self.inventory_at):
            self.inventory, self.inventory_at = dict(window.inventory), end


    def merge(self, other: Sums) -> None:
        """Add ``other``: counts, latency sums, labels and bins added (saturating at ``MAX_INT``),
        the inventory the later of the two (``other``'s on a tie)."""
        self.windows, self.inferences = _cap(self.windows + other.windows), _cap(self.inferences + other.inferences)
        self.errors = _cap(self.errors + other.errors)
        self.frames_skipped = _cap(self.frames_skipped + other.frames_skipped)
        self.floats = [a + b for a, b in zip(self.floats, other.floats, strict=True)]
        self.predictions = _added(self.predictions, other.predictions)
        for stat, by_edges in other.histograms.items():
            for edges, counts in by_edges.items():
                self.histograms = _binned(self.histograms, stat, edges, counts)
        if other.inventory_at is not None and (self.inventory_at is None or other.inventory_at >= self.inventory_at):
            self.inventory, self.inventory_at = other.inventory, other.inventory_at


def _added(counts: dict[str, Any], more: dict[str, int]) -> dict[str, Any]:
    out = dict(counts)
    for key, value in more.items():
        out[key] = _cap(int(out.get(key, 0)) + int(value))
    return out


def _binned(histograms: dict[str, Any], stat: str, edges: str, counts: list[int]) -> dict[str, Any]:
    out = {s: dict(by_edges) for s, by_edges in histograms.items()}
    before = out.setdefault(stat, {}).get(edges) or [0] * len(counts)
    out[stat][edges] = [_cap(a + b) for a, b in zip(before, counts, strict=True)]
    return out


def add(session: Session, window: Telemetry, received: datetime) -> None:
    """Count one stored window; written to its rollup row when the session commits."""
    pending: dict[Key, Sums] = session.info.setdefault(PENDING, {})
    key = (window.device_id, window.bundle.sha256 if window.bundle else "", bucket_of(received))
    pending.setdefault(key, Sums()).add(window)


def _rows(session: Session, keys: list[Key]) -> dict[Key, TelemetryRollup]:
    """The rows of ``keys``, made if absent (one INSERT … ON CONFLICT DO NOTHING), read and locked
    (one SELECT … FOR UPDATE) in key order."""
    insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    zero = {"windows": 0, "inferences": 0, "errors": 0, "frames_skipped": 0, "latency_p50_sum": 0.0,
            "latency_p95_sum": 0.0, "latency_n": 0.0, "model_p95_sum": 0.0, "model_n": 0.0, "predictions": {},
            "histograms": {}}
    session.execute(insert(TelemetryRollup).values([{"device_id": d, "bundle_sha256": s, "bucket": b, **zero}
                                                    for d, s, b in keys])
                    .on_conflict_do_nothing(index_elements=["device_id", "bundle_sha256", "bucket"]))
    r = TelemetryRollup
    rows = session.scalars(select(r).where(tuple_(r.device_id, r.bundle_sha256, r.bucket).in_(keys))
                           .order_by(r.device_id, r.bundle_sha256, r.bucket).with_for_update()
                           .execution_options(populate_existing=True)).all()
    return {(row.device_id, row.bundle_sha256, bucket_of(row.bucket)): row for row in rows}


def locked_rows(session: Session, keys: list[Key]) -> dict[Key, TelemetryRollup]:
    """The rows of ``keys`` (sorted), made (zero, a minute's) if absent, locked; 500 keys a statement."""
    rows: dict[Key, TelemetryRollup] = {}
    for start in range(0, len(keys), 500):
        rows.update(_rows(session, keys[start:start + 500]))
    return rows


def write(session: Session) -> None:
    """Add the session's pending sums to their rows (called before it commits)."""
    pending: dict[Key, Sums] = session.info.pop(PENDING, {})
    keys = sorted(pending)  # a fixed order: two workers lock rows alike, no deadlock
    rows = locked_rows(session, keys)
    for key in keys:
        fold(rows[key], pending[key])
    session.flush()


def sums_of(row: TelemetryRollup | Row[Any]) -> Sums:
    """A row's sums (an ORM row or a selected one), to add to another (``cloud.compaction``)."""
    return Sums(row.windows, row.inferences, row.errors, row.frames_skipped,
                [row.latency_p50_sum, row.latency_p95_sum, row.latency_n, row.model_p95_sum, row.model_n],
                dict(row.predictions), dict(row.histograms), row.inventory, row.inventory_at)


def fold(row: TelemetryRollup, sums: Sums) -> None:
    """Add ``sums`` to ``row`` (``Sums.merge``)."""
    total = sums_of(row)
    total.merge(sums)
    row.windows, row.inferences, row.errors, row.frames_skipped = (total.windows, total.inferences, total.errors,
                                                                   total.frames_skipped)
    row.latency_p50_sum, row.latency_p95_sum, row.latency_n, row.model_p95_sum, row.model_n = total.floats
    if sums.predictions:
        row.predictions = total.predictions
    if sums.histograms:
        row.histograms = total.histograms
    row.inventory, row.inventory_at = total.inventory, total.inventory_at


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(PENDING):
        write(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)  # the windows were not stored either


def backfill(sessions: sessionmaker[Session], batch: int = 2000) -> int:
    """Sum the raw telemetry of a store from before the rollups into them, in batches. Only the
    process that records the marker (insert-if-absent in ``cloud_secrets``) does it, so two
    processes opening the store at once do not count it twice. Returns the windows summed."""
    with sessions.begin() as session:
        insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
        won = session.execute(insert(CloudSecret).values(name=BACKFILLED, value=b"1", created_at=now())
                              .on_conflict_do_nothing(index_elements=["name"]).returning(CloudSecret.name)).first()
    if won is None:
        return 0
    done, last = 0, 0
    while True:
        with sessions.begin() as session:
            rows = session.execute(select(TelemetryRow.id, TelemetryRow.payload, TelemetryRow.received_at)
                                   .where(TelemetryRow.id > last).order_by(TelemetryRow.id).limit(batch)).all()
            for _, payload, received in rows:
                try:
                    add(session, Telemetry.model_validate(payload), received)
                except ValidationError:  # stored once validated: cannot happen, and must not stop the rest
                    log.warning("a stored telemetry window no longer validates; not summed")
        done += len(rows)
        if len(rows) < batch:
            if done:
                log.warning("summed %d stored telemetry windows into the rollups (a store from before them)", done)
            return done
        last = rows[-1][0]
