"""The fleet at a glance: how many devices (and how many online) per group, board and active
bundle, counted over columns only (no device becomes a model), for the dashboard's fleet page,
whose every count links to the filtered, paged device list."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
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


def overview(session: Session) -> FleetOverview:
    counts: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in ("group", "board", "bundle")}
    total = online = 0
    for is_online, groups, reported, board, sha in session.execute(select(
            Device.online, Device.groups, Device.reported_groups, Device.board, Device.active_sha256)):
        total, online = total + 1, online + bool(is_online)
        keys = {"group": sorted({*groups, *reported}) or [""], "board": [board or ""], "bundle": [sha or ""]}
        for kind, values in keys.items():
            for value in values:
                counts[kind][value][0] += 1
                counts[kind][value][1] += bool(is_online)
    labels = {sha: f"{name} v{version} #{sequence}" for sha, name, version, sequence in session.execute(
        select(BundleRow.sha256, BundleRow.model_name, BundleRow.model_version, BundleRow.sequence))}

    def facets(kind: str) -> list[Facet]:
        rows = sorted(counts[kind].items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [Facet(value=value, label=(labels.get(value, value[:12]) if kind == "bundle" else value) or NONE,
                      devices=n, online=up) for value, (n, up) in rows]

    return FleetOverview(devices=total, online=online, groups=facets("group"), boards=facets("board"),
                         bundles=facets("bundle"))
