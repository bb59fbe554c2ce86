"""The one read path of the cloud's store: the CLI (``fleet``, ``rollout``, ``monitor``, ``cloud``),
the HTTP API, the demo and the dashboard all call :class:`Queries`, never the ORM. Filters and
paging run in the database; answers are pydantic models (``cloud.queries.models``), which are
also the API's JSON, so a remote client can implement the same methods over HTTP and hand the
CLI the same models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from cloud.queries import device_series, fleet, live, overview, records, rollouts, series
from cloud.queries.device_series import SeriesView
from cloud.queries.live import RolloutGates, TimelineEntry
from cloud.queries.models import (
    AlertView,
    AuditView,
    BundleDetail,
    BundleView,
    DeadLetterView,
    DeviceDetail,
    DeviceFilter,
    DeviceView,
    MonitorView,
    Page,
    Paging,
    RollbackStepView,
    RolloutDetail,
    RolloutSummary,
    Scope,
    SeriesPoint,
)
from cloud.queries.overview import FleetOverview
from cloud.queries.series import SeriesFilter
from cloud.store import now

__all__ = ["DeviceFilter", "Page", "Paging", "Queries", "SeriesFilter"]


class Queries:
    """Read-only; each call opens (and closes) its own session."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = now) -> None:
        self.sessions, self.clock = sessions, clock
        self.live = live.LiveCache()

    def devices(self, where: DeviceFilter | None = None) -> Page[DeviceView]:
        with self.sessions() as session:
            return fleet.devices(session, where or DeviceFilter())

    def device(self, device_id: str) -> DeviceDetail:
        with self.sessions() as session:
            return fleet.device(session, device_id)

    def fault_counts(self) -> dict[str, int]:
        """Devices with each fault now, by code (no device ids: what /metrics exports)."""
        with self.sessions() as session:
            return fleet.fault_counts(session)

    def online(self, prefix: str = "") -> int:
        with self.sessions() as session:
            return fleet.online_count(session, prefix)

    def bundles(self, paging: Paging | None = None) -> Page[BundleView]:
        with self.sessions() as session:
            return fleet.bundles(session, paging or Paging())

    def bundle(self, prefix: str) -> BundleDetail:
        with self.sessions() as session:
            return fleet.bundle(session, prefix)

    def rollouts(self, paging: Paging | None = None, status: str | None = None) -> Page[RolloutSummary]:
        with self.sessions() as session:
            return rollouts.recent(session, paging or Paging(limit=20), status)

    def rollout(self, rollout_id: str) -> RolloutDetail:
        with self.sessions() as session:
            return rollouts.detail(session, rollout_id)

    def rollback_plan(self, rollout_id: str) -> list[RollbackStepView]:
        with self.sessions() as session:
            return rollouts.rollback_plan(session, rollout_id)

    def gates(self, rollout_id: str) -> RolloutGates:
        """Each wave's gates: judged verdicts, and the current wave's evaluated now (``live``)."""
        with self.sessions() as session:
            return live.gates(session, rollout_id, self.live)

    def timeline(self, rollout_id: str) -> list[TimelineEntry]:
        with self.sessions() as session:
            return live.timeline(session, rollout_id)

    def overview(self) -> FleetOverview:
        with self.sessions() as session:
            return overview.overview(session)

    def device_series(self, device_id: str, hours: float = 6.0) -> SeriesView:
        """The device's telemetry over the last ``hours`` in time buckets (``series``)."""
        until = self.clock()
        with self.sessions() as session:
            return device_series.device_series(session, device_id, until - timedelta(hours=hours), until)

    def telemetry(self, by: Scope = "group", minutes: float | None = 60.0) -> list[MonitorView]:
        """Summaries per device, group or bundle over the last ``minutes`` (None: everything kept)."""
        since = None if minutes is None else self.clock() - timedelta(minutes=minutes)
        with self.sessions() as session:
            return records.telemetry(session, by, since)

    def series(self, where: SeriesFilter, minutes: float = 24 * 60, step_minutes: int = 5) -> list[SeriesPoint]:
        """A device's or bundle's telemetry over the last ``minutes``, one point per step and bundle."""
        with self.sessions() as session:
            return series.series(session, where, self.clock() - timedelta(minutes=minutes), step_minutes)

    def alerts(self, paging: Paging | None = None, kind: str | None = None) -> Page[AlertView]:
        with self.sessions() as session:
            return records.alerts(session, paging or Paging(limit=20), kind)

    def dead_letters(self, paging: Paging | None = None) -> Page[DeadLetterView]:
        with self.sessions() as session:
            return records.dead_letters(session, paging or Paging(limit=20))

    def audit(self, paging: Paging | None = None, action: str | None = None) -> Page[AuditView]:
        with self.sessions() as session:
            return records.audit(session, paging or Paging(limit=50), action)
