"""Telemetry summaries, alerts, dead letters and the audit log, paged newest first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.monitor import MonitorRow, monitor
from cloud.queries.models import AlertView, AuditView, DeadLetterView, MonitorView, Page, Paging, Scope
from cloud.store import Alert, AuditEntry, DeadLetter


def monitor_view(row: MonitorRow) -> MonitorView:
    s = row.summary
    return MonitorView(scope=row.scope, subject=row.subject, devices=len(s.devices), windows=s.windows,
                       inferences=s.inferences, error_rate=s.error_rate, latency_p50_ms=s.latency_p50,
                       latency_p95_ms=s.latency_p95, prediction_drift_js=row.reference_drift,
                       previous_drift_js=row.previous_drift, input_drift_psi=row.input_psi,
                       inventory=dict(s.inventory), bundles=list(row.bundles))


def telemetry(session: Session, by: Scope, since: datetime | None) -> list[MonitorView]:
    return [monitor_view(r) for r in monitor(session, by, since)]


def alerts(session: Session, paging: Paging, kind: str | None = None) -> Page[AlertView]:
    query = select(Alert) if kind is None else select(Alert).where(Alert.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Alert.id.desc()).offset(paging.offset).limit(paging.limit)).all()
    return Page(items=[AlertView(id=a.id, kind=a.kind, scope=a.scope, subject=a.subject, message=a.message,
                                 value=a.value, created_at=a.created_at) for a in rows],
                total=total, offset=paging.offset, limit=paging.limit)


def dead_letters(session: Session, paging: Paging) -> Page[DeadLetterView]:
    total = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
    rows = session.execute(select(DeadLetter.id, DeadLetter.topic, DeadLetter.reason,
                                  func.length(DeadLetter.payload), DeadLetter.received_at)
                           .order_by(DeadLetter.id.desc()).offset(paging.offset).limit(paging.limit)).all()
    return Page(items=[DeadLetterView(id=i, topic=topic, reason=reason, bytes=int(size or 0), received_at=at)
                       for i, topic, reason, size, at in rows], total=total, offset=paging.offset, limit=paging.limit)


def audit(session: Session, paging: Paging, action: str | None = None) -> Page[AuditView]:
    query = select(AuditEntry) if action is None else select(AuditEntry).where(AuditEntry.action == action)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).offset(paging.offset).limit(paging.limit)).all()
    return Page(items=[AuditView(id=a.id, at=a.at, actor=a.actor, action=a.action, target=a.target, result=a.result,
                                 detail=a.detail) for a in rows], total=total, offset=paging.offset, limit=paging.limit)
