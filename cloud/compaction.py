"""Compaction of the telemetry rollups, a part of the retention job (``cloud.retention``): the
minute rows (``store.TelemetryRollup``, ``minutes`` 1) of every hour that ended more than
``retention.rollup_minutes_days`` ago are merged into one row per device, bundle and hour (the row
at the hour's start, ``minutes`` 60), and rollup rows of hours that ended more than
``retention.rollup_hours_days`` ago are deleted.

Merging is exact: counts, label counts and histogram bins are added (saturating at ``MAX_INT`` as
ingestion does), inference-weighted latency sums added, and the inventory kept is the latest
(``inventory_at``, then the later minute: what ``cloud.aggregate`` picks), so any range of whole
hours sums to the same figures before and after (float sums to their rounding). Batches take the
oldest minute rows first (at most ``batch``; an hour may be split over two: its later minutes are
added to the hourly row the first made); each adds its minutes to their hourly rows and deletes
them in one transaction: a compaction that dies half-way leaves every minute either merged or not,
never both, and the next run goes on."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.rollup import Key, Sums, fold, hour_of, locked_rows, sums_of
from cloud.store import TelemetryRollup

HOUR = 60  # minutes: the span of a compacted row


def _delete(session: Session, keys: list[Key]) -> None:
    r = TelemetryRollup
    if keys:  # one executemany by primary key
        session.connection().execute(delete(r).where(
            r.device_id == bindparam("key_device"), r.bundle_sha256 == bindparam("key_bundle"),
            r.bucket == bindparam("key_bucket")),
            [{"key_device": d, "key_bundle": b, "key_bucket": t} for d, b, t in keys])


def _merge(session: Session, end: datetime, batch: int) -> tuple[int, int]:
    """One batch: (minute rows merged, hourly rows made)."""
    r = TelemetryRollup
    rows = session.execute(select(*r.__table__.columns).where(r.minutes == 1, r.bucket < end).order_by(
        r.bucket, r.device_id, r.bundle_sha256).limit(batch).with_for_update()).all()  # the (minutes, bucket) index
    hours: dict[Key, Sums] = {}
    gone: list[Key] = []
    for row in rows:  # in bucket order: a later minute's inventory wins a tie, as readers pick it
        key = (row.device_id, row.bundle_sha256, hour_of(row.bucket))
        sums = hours.setdefault(key, Sums())
        if row.bucket != key[2]:  # the minute at the hour's start becomes the hourly row
            sums.merge(sums_of(row))
            gone.append((row.device_id, row.bundle_sha256, row.bucket))
    targets = locked_rows(session, sorted(hours))  # the hour's row, made if absent
    made = 0
    for key, sums in hours.items():
        target = targets[key]
        made += target.minutes != HOUR
        fold(target, sums)
        target.minutes = HOUR
    session.flush()
    _delete(session, gone)
    return len(rows), made


def compact(sessions: sessionmaker[Session], cutoff: datetime, batch: int) -> tuple[int, int]:
    """Merge the minute rows of the hours that ended by ``cutoff``: (minute rows merged, hourly
    rows made)."""
    merged = made = 0
    while True:
        with sessions.begin() as session:
            rows, hours = _merge(session, hour_of(cutoff), batch)
        merged, made = merged + rows, made + hours
        if rows < batch:
            return merged, made


def purge(sessions: sessionmaker[Session], cutoff: datetime, batch: int) -> int:
    """Delete the rollup rows (hourly, or minutes never merged) of hours that ended by ``cutoff``."""
    r, deleted = TelemetryRollup, 0
    while True:
        with sessions.begin() as session:
            keys = [tuple(k) for k in session.execute(select(r.device_id, r.bundle_sha256, r.bucket).where(
                r.bucket < hour_of(cutoff)).order_by(r.bucket, r.device_id, r.bundle_sha256).limit(batch))]
            _delete(session, keys)  # type: ignore[arg-type]
        deleted += len(keys)
        if len(keys) < batch:
            return deleted
