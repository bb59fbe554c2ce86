"""Rollouts as operators read them: a page of recent ones, one wave by wave with its gate
verdicts and device states, and the rollback plan."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud import rollouts
from cloud.queries.models import (
    GateView,
    Page,
    Paging,
    RollbackStepView,
    RolloutDetail,
    RolloutDeviceView,
    RolloutSummary,
    WaveView,
)
from cloud.store import Rollout


def summary(r: Rollout) -> RolloutSummary:
    return RolloutSummary(id=r.id, bundle=r.bundle_sha256, status=r.status, wave=r.wave + 1, reason=r.reason,
                          created_at=r.created_at, updated_at=r.updated_at)


def recent(session: Session, paging: Paging, status: str | None = None) -> Page[RolloutSummary]:
    """Newest first."""
    query = select(Rollout)
    if status is not None:
        query = query.where(Rollout.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Rollout.created_at.desc(), Rollout.id.desc())
                           .offset(paging.offset).limit(paging.limit)).all()
    return Page(items=[summary(r) for r in rows], total=total, offset=paging.offset, limit=paging.limit)


def detail(session: Session, rollout_id: str) -> RolloutDetail:
    view = rollouts.view(session, rollout_id)
    r, b = view.rollout, view.bundle
    verdicts = {g["wave"]: g["results"] for g in r.gate_results}
    waves = []
    for wave in range(view.waves()):
        states: dict[str, int] = {}
        members = [d for d in view.devices if d.wave == wave]
        for d in members:
            key = "ROLLED_BACK" if d.rolled_back else d.state
            states[key] = states.get(key, 0) + 1
        waves.append(WaveView(wave=wave + 1, devices=len(members), states=dict(sorted(states.items())),
                              gates=[GateView.model_validate(g) for g in verdicts.get(wave, [])]))
    return RolloutDetail(
        id=r.id, bundle=r.bundle_sha256, status=r.status, wave=r.wave + 1, waves=view.waves(), reason=r.reason,
        bundle_label=f"{b.model_name} v{b.model_version} #{b.sequence}" if b else r.bundle_sha256[:12],
        gates=r.gate_results, counts=view.counts(), plan=r.plan,
        failure_reasons=[{"devices": n, "reason": why} for n, why in view.reasons()], wave_views=waves,
        devices=[RolloutDeviceView(device=d.device_id, wave=d.wave + 1, state=d.state, reason=d.reason,
                                   rolled_back=d.rolled_back) for d in view.devices],
        created_at=r.created_at, updated_at=r.updated_at)


def rollback_plan(session: Session, rollout_id: str) -> list[RollbackStepView]:
    return [RollbackStepView(device=s.device_id, action=s.action, current=s.current, to=s.to, why=s.why)
            for s in rollouts.rollback_plan(session, rollout_id)]
