"""Devices and bundles, filtered and paged in the database (a fleet of thousands is never loaded
to show one page of it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select, true
from sqlalchemy.orm import Session

from cloud.errors import NotFoundError
from cloud.fleet import find_bundle
from cloud.ingest import dropped_windows
from cloud.queries.models import (
    BundleDetail,
    BundleView,
    DeviceDetail,
    DeviceFilter,
    DeviceView,
    EventView,
    FaultView,
    Page,
    Paging,
)
from cloud.store import BundleRow, Device, EventRow
from contract.state import FaultCode
from contract.versions import needs_new_agent


def device_view(d: Device) -> DeviceView:
    return DeviceView(id=d.id, online=d.online, board=d.board, agent_version=d.agent_version, protocol=d.protocol,
                      needs_new_agent=needs_new_agent(d.protocol), groups=d.all_groups(), tags=dict(d.tags),
                      active=d.active, previous=d.previous, job_id=d.job_id, job_state=d.job_state,
                      first_seen=d.first_seen, last_seen=d.last_seen,
                      faults=[FaultView.model_validate(f) for f in d.faults or []])


def _in_list(session: Session, column: Any, value: str) -> ColumnElement[bool]:
    """``value`` is an element of the JSON list in ``column`` (SQLite json_each, PostgreSQL
    json_array_elements_text), correlated with the outer query's row."""
    dialect = session.get_bind().dialect.name
    function = func.json_each if dialect == "sqlite" else func.json_array_elements_text
    elements = function(column).table_valued("value")
    return exists(select(1).select_from(elements).where(elements.c.value == value))


def _literal(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(session: Session, where: DeviceFilter) -> Select[Any]:
    query = select(Device)
    if where.group is not None:
        query = query.where(or_(_in_list(session, Device.groups, where.group),
                                _in_list(session, Device.reported_groups, where.group)))
    if where.board is not None:
        query = query.where(Device.board == where.board)
    if where.bundle is not None:
        prefix = where.bundle.lower()
        query = query.where(func.substr(Device.active_sha256, 1, len(prefix)) == prefix)
    if where.online is not None:
        query = query.where(Device.online.is_(where.online))
    if where.faulty is not None:
        has = func.coalesce(func.json_array_length(Device.faults), 0) > 0
        query = query.where(has if where.faulty else ~has)
    if where.text:
        pattern = f"%{_literal(where.text)}%"
        query = query.where(or_(*(func.lower(c).like(pattern, escape="\\")
                                  for c in (Device.id, Device.board, Device.agent_version))))
    return query


def devices(session: Session, where: DeviceFilter) -> Page[DeviceView]:
    """Matching devices, online ones first, then by id (the order rollouts pick waves in)."""
    query = _filtered(session, where)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Device.online.desc(), Device.id).offset(where.offset)
                           .limit(where.limit)).all()
    return Page(items=[device_view(d) for d in rows], total=total, offset=where.offset, limit=where.limit)


def device(session: Session, device_id: str, events: int = 15) -> DeviceDetail:
    row = session.get(Device, device_id)
    if row is None:
        raise NotFoundError(f"no device {device_id!r}: devices appear once they publish their state")
    latest = session.scalars(select(EventRow).where(EventRow.device_id == device_id)
                             .order_by(EventRow.id.desc()).limit(events)).all()
    dropped = dropped_windows(session, [device_id]).get(device_id, 0)
    return DeviceDetail(device=device_view(row), dropped_windows=dropped,
                        events=[EventView(ts=e.ts, type=e.type, job_id=e.job_id, state=e.state, reason=e.reason)
                                for e in reversed(latest)])


def fault_counts(session: Session) -> dict[str, int]:
    """Devices with each fault in their last state, by code (every code of the contract, 0 included),
    counted by the store: SQLite's json_each, PostgreSQL's json_array_elements."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    elements = (func.json_each if sqlite else func.json_array_elements)(Device.faults).table_valued("value")
    code = func.json_extract(elements.c.value, "$.code") if sqlite else elements.c.value.op("->>")("code")
    counted = session.execute(select(code, func.count(Device.id.distinct())).select_from(Device)
                              .join(elements, true()).group_by(code)).all()
    every = {str(c): 0 for c in FaultCode}
    return every | {str(c): int(n) for c, n in counted if c in every}


def online_count(session: Session, prefix: str = "") -> int:
    """Devices online now (whose id starts with ``prefix``)."""
    query = select(func.count()).select_from(Device).where(Device.online.is_(True))
    if prefix:
        query = query.where(func.substr(Device.id, 1, len(prefix)) == prefix)
    return int(session.scalar(query) or 0)


def bundle_view(b: BundleRow) -> BundleView:
    return BundleView(sha256=b.sha256, model=b.model_name, version=b.model_version, target=b.target,
                      sequence=b.sequence, size=b.size, added_at=b.added_at)


def bundles(session: Session, paging: Paging) -> Page[BundleView]:
    """The catalogue, oldest first."""
    total = session.scalar(select(func.count()).select_from(BundleRow)) or 0
    rows = session.scalars(select(BundleRow).order_by(BundleRow.added_at, BundleRow.sha256)
                           .offset(paging.offset).limit(paging.limit)).all()
    return Page(items=[bundle_view(b) for b in rows], total=total, offset=paging.offset, limit=paging.limit)


def bundle(session: Session, prefix: str) -> BundleDetail:
    row = find_bundle(session, prefix)
    return BundleDetail(bundle=bundle_view(row), manifest=row.manifest)
