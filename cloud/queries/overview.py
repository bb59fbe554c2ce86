"""The fleet at a glance: how many devices (and how many online) per group, board and active
bundle, counted by the store (GROUP BY: no device row leaves the database), for the dashboard's
fleet page, whose every count links to the filtered, paged device list, and for ``/metrics``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, case, distinct, func, select, true, union
from sqlalchemy.orm import Session

from cloud.queries.models import View
from cloud.store import BundleRow, Device

NONE = "(none)"


class Facet(View):
    value: str  # what the device list filters on (a group, a board, a bundle's sha256); "" for none
    label: str
    devices: int
    online: int


class FleetOverview(View):
    devices: int
    online: int
    groups: list[Facet]  # assigned or reported, most devices first
    boards: list[Facet]
    bundles: list[Facet]  # the bundle each device reports active


def _online(column: Any) -> Any:
    return func.coalesce(func.sum(case((column, 1), else_=0)), 0)


def _elements(session: Session, column: Any) -> Any:
    """The JSON list in ``column`` as rows (SQLite json_each, PostgreSQL json_array_elements_text)."""
    function = func.json_each if session.get_bind().dialect.name == "sqlite" else func.json_array_elements_text
    return function(column).table_valued("value")


def _ordered(rows: list[Facet]) -> list[Facet]:
    return sorted(rows, key=lambda f: (-f.devices, f.value))


def groups(session: Session, total: int, online: int) -> list[Facet]:
    """Per group, each device once whether the group is assigned, reported or both; devices in no
    group as value "" (``total``/``online``: the fleet's, for that remainder)."""
    parts: list[Select[Any]] = []
    for column in (Device.groups, Device.reported_groups):
        elements = _elements(session, column)
        parts.append(select(Device.id, Device.online, elements.c.value.label("grp"))
                     .select_from(Device).join(elements, true()))
    member = union(*parts).subquery()  # (device, online, group), duplicates removed
    rows = [Facet(value=str(g), label=str(g), devices=n, online=up) for g, n, up in session.execute(
        select(member.c.grp, func.count(), _online(member.c.online)).group_by(member.c.grp))]
    grouped, grouped_online = session.execute(select(func.count(distinct(member.c.id)), func.count(
        distinct(case((member.c.online, member.c.id)))))).one()
    if total - grouped:
        rows.append(Facet(value="", label=NONE, devices=total - grouped, online=online - grouped_online))
    return _ordered(rows)


def boards(session: Session) -> list[Facet]:
    return _ordered([Facet(value=b or "", label=b or NONE, devices=n, online=up) for b, n, up in session.execute(
        select(Device.board, func.count(), _online(Device.online)).group_by(Device.board))])


def bundles(session: Session) -> list[Facet]:
    """Per active bundle, labelled from the catalogue (an unknown one by its sha256's start)."""
    query = (select(Device.active_sha256, BundleRow.model_name, BundleRow.model_version, BundleRow.sequence,
                    func.count(), _online(Device.online))
             .outerjoin(BundleRow, BundleRow.sha256 == Device.active_sha256)
             .group_by(Device.active_sha256, BundleRow.model_name, BundleRow.model_version, BundleRow.sequence))
    return _ordered([Facet(value=sha or "", label=(f"{name} v{version} #{sequence}" if name is not None
                                                     else (sha or "")[:12]) or NONE, devices=n, online=up)
                     for sha, name, version, sequence, n, up in session.execute(query)])


def overview(session: Session) -> FleetOverview:
    by_board = boards(session)  # every device has one board (or none): the fleet's totals too
    total, online = sum(f.devices for f in by_board), sum(f.online for f in by_board)
    return FleetOverview(devices=total, online=online, groups=groups(session, total, online), boards=by_board,
                         bundles=bundles(session))
