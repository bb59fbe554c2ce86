"""Retention: rows older than their kind's TTL (``retention`` in the cloud's configuration) are
deleted by a scheduled job, in batches of ``batch`` rows (one short transaction each, so
ingestion is never locked out for long), and the counts are recorded in the audit log (actor
``cloud``, action ``retention``). Raw telemetry windows and events default to 10 days; the
rollups (``store.TelemetryRollup``) that monitoring, drift and the gates read outlive them, so
deleting raw rows changes no figure and no verdict. The rollups' minutes are merged into hours
after ``rollup_minutes_days`` and those deleted after ``rollup_hours_days`` (``cloud.compaction``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.audit import record
from cloud.compaction import compact, purge
from cloud.config import Retention
from cloud.store import Alert, AlertDelivery, AuditEntry, DeadLetter, EventRow, TelemetryRow, now

log = logging.getLogger("coldchain.cloud.retention")


@dataclass(frozen=True)
class Kind:
    name: str  # as in the audit entry's counts
    table: Any  # the ORM class
    column: Any  # the time the TTL counts from
    days: Callable[[Retention], float | None]


KINDS = (
    Kind("telemetry", TelemetryRow, TelemetryRow.received_at, lambda r: r.telemetry_days),
    Kind("events", EventRow, EventRow.received_at, lambda r: r.events_days),
    Kind("dead_letters", DeadLetter, DeadLetter.received_at, lambda r: r.dead_letters_days),
    Kind("alert_deliveries", AlertDelivery, AlertDelivery.created_at, lambda r: r.alerts_days),
    Kind("alerts", Alert, Alert.created_at, lambda r: r.alerts_days),
    Kind("audit", AuditEntry, AuditEntry.at, lambda r: r.audit_days),
)


class Retainer:
    def __init__(self, sessions: sessionmaker[Session], config: Retention,
                 clock: Callable[[], datetime] = now) -> None:
        self.sessions, self.config, self.clock = sessions, config, clock

    def step(self) -> dict[str, int]:
        """Delete what is past its TTL and compact the rollups; returns (and audits) the count per
        kind (``rollup_minutes``: minute rows merged into hourly ones; ``rollup_hours``: rollup rows
        deleted)."""
        clock, counts = self.clock(), {}
        for kind in KINDS:
            days = kind.days(self.config)
            if days is not None:
                counts[kind.name] = self._purge(kind, clock - timedelta(days=days))
        made, minutes, hours = 0, self.config.rollup_minutes_days, self.config.rollup_hours_days
        if hours is not None:  # first: what is past both is deleted, not merged first
            counts["rollup_hours"] = purge(self.sessions, clock - timedelta(days=hours), self.config.batch)
        if minutes is not None:
            counts["rollup_minutes"], made = compact(self.sessions, clock - timedelta(days=minutes),
                                                     self.config.batch)
        cutoffs = {k.name: k.days(self.config) for k in KINDS} | {"rollup_minutes": minutes, "rollup_hours": hours}
        record(self.sessions, "cloud", "retention", None, "ok",
               {"deleted": counts, "merged_into_hours": made, "days": cutoffs})
        if any(counts.values()):
            log.info("retention deleted %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        return counts

    def _purge(self, kind: Kind, cutoff: datetime) -> int:
        deleted = 0
        while True:
            with self.sessions.begin() as session:
                ids = session.scalars(select(kind.table.id).where(kind.column < cutoff).order_by(kind.table.id)
                                      .limit(self.config.batch)).all()
                if ids:
                    session.execute(delete(kind.table).where(kind.table.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < self.config.batch:
                return deleted
