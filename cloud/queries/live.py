"""A rollout as operators watch it: each wave's gates and the rollout's timeline.

Judged waves show the verdicts the controller stored. The current wave of a running or paused
rollout, not judged yet, shows its gates evaluated *now* by the code the controller judges with
(``cloud.gates.evaluate`` over ``Controller.evidence``): the value each gate would be judged on if
the wave ended this moment, against its limit. The API (``GET /rollouts/{id}/gates``) and the
dashboard both read this function, so they show the same numbers; it evaluates a wave at most
every ``LIVE_TTL_S`` (a large wave's evidence is many telemetry windows)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from cloud import rollouts
from cloud.controller import Controller
from cloud.gates import evaluate
from cloud.plan import RolloutPlan
from cloud.queries.models import GateView, View
from cloud.store import Alert, AuditEntry, BundleRow, EventRow, Rollout, RolloutDevice
from contract.manifest import Manifest

LIVE = frozenset({rollouts.RUNNING, rollouts.PAUSED})
LIVE_TTL_S = 10.0  # a wave's live gates are evaluated at most this often (they read its telemetry windows)


class WaveGates(View):
    wave: int  # 1-based
    judged: bool  # False: evaluated now; the wave still runs and its verdict may change
    gates: list[GateView]


class RolloutGates(View):
    rollout: str
    status: str
    wave: int  # 1-based, the current one
    waves: list[WaveGates]  # judged ones in order, then the live one if any


class TimelineEntry(View):
    at: datetime
    kind: str  # created, operator, alert, device
    actor: str | None  # who: an operator's token or user, a device id
    text: str


class LiveCache:
    """The live gates of each rollout's current wave, kept LIVE_TTL_S (one per ``Queries``: the API
    and the dashboard it serves share it, so they show the same evaluation)."""

    def __init__(self, ttl_s: float = LIVE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._kept: dict[tuple[Any, ...], tuple[float, WaveGates | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], evaluate: Callable[[], WaveGates | None]) -> WaveGates | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and self.clock() - kept[0] < self.ttl_s:
                return kept[1]
        value = evaluate()
        with self._lock:
            self._kept = {k: v for k, v in self._kept.items() if self.clock() - v[0] < self.ttl_s}
            self._kept[key] = (self.clock(), value)
        return value


def gates(session: Session, rollout_id: str, cache: LiveCache | None = None) -> RolloutGates:
    rollout = rollouts.get(session, rollout_id)
    waves = [WaveGates(wave=int(g["wave"]) + 1, judged=True, gates=[GateView.model_validate(r) for r in g["results"]])
             for g in rollout.gate_results]
    judged = {int(g["wave"]) for g in rollout.gate_results}
    if rollout.status in LIVE and rollout.wave not in judged and rollout.wave_started_at is not None:
        key = (rollout.id, rollout.wave, rollout.wave_started_at, rollout.wave_settled_at)
        live = cache.get(key, lambda: _live(session, rollout)) if cache is not None else _live(session, rollout)
        if live is not None:
            waves.append(live)
    return RolloutGates(rollout=rollout.id, status=rollout.status, wave=rollout.wave + 1, waves=waves)


def _live(session: Session, rollout: Rollout) -> WaveGates | None:
    """The current wave's gates as the controller's ``_judge`` would evaluate them now."""
    bundle = session.get(BundleRow, rollout.bundle_sha256)
    wave = list(session.scalars(select(RolloutDevice).where(
        RolloutDevice.rollout_id == rollout.id, RolloutDevice.wave == rollout.wave)
        .order_by(RolloutDevice.device_id)).all())
    if bundle is None or all(d.state in rollouts.OUT_OF_ROLLOUT for d in wave):
        return None  # nothing of this wave is the rollout's to judge
    planned = RolloutPlan.model_validate(rollout.plan).gates
    results = evaluate(planned, Controller.evidence(session, rollout, wave), Manifest.model_validate(bundle.manifest))
    return WaveGates(wave=rollout.wave + 1, judged=False, gates=[GateView.model_validate(r.to_json()) for r in results])


def timeline(session: Session, rollout_id: str, limit: int = 80) -> list[TimelineEntry]:
    """Newest first: operators' actions (the audit log), alerts on the rollout and its devices' job
    events (the latest ``limit`` of each kind), and its creation."""
    rollout = rollouts.get(session, rollout_id)
    out = [TimelineEntry(at=rollout.created_at, kind="created", actor=None,
                         text=f"created for bundle {rollout.bundle_sha256[:12]}")]
    for a in session.scalars(select(AuditEntry).where(AuditEntry.target == rollout_id)
                             .order_by(AuditEntry.id.desc()).limit(limit)):
        reason = a.detail.get("reason") if isinstance(a.detail, dict) else None
        text = f"{a.action}: {a.result}" + (f" ({reason})" if reason else "")
        out.append(TimelineEntry(at=a.at, kind="operator", actor=a.actor, text=text))
    for alert in session.scalars(select(Alert).where(Alert.scope == "rollout", Alert.subject == rollout_id)
                                 .order_by(Alert.id.desc()).limit(limit)):
        out.append(TimelineEntry(at=alert.created_at, kind="alert", actor=None, text=f"{alert.kind}: {alert.message}"))
    mine = RolloutDevice.rollout_id == rollout_id
    jobs = union_all(select(RolloutDevice.job_id).where(mine),
                     select(RolloutDevice.job_id.concat(".rollback")).where(mine),
                     select(RolloutDevice.job_id.concat(".cancel")).where(mine))
    for e in session.scalars(select(EventRow).where(EventRow.job_id.in_(jobs.scalar_subquery()))
                             .order_by(EventRow.id.desc()).limit(limit)):
        what = f"{e.type} {e.state or ''}".strip() + (f": {e.reason}" if e.reason else "")
        out.append(TimelineEntry(at=e.ts, kind="device", actor=e.device_id, text=f"{what} (job {e.job_id})"))
    return sorted(out, key=lambda t: t.at, reverse=True)
