"""Telemetry summed in the database: one :class:`Part` per (device, bundle) over a time range,
from the rollups (``store.TelemetryRollup``: sums per device, bundle and minute of reception, or
hour once compacted, kept past the raw windows' retention; ``cloud.rollup`` writes them). Numbers are ``GROUP BY``
sums; label counts and histogram bins are summed with ``json_each`` on SQLite and
``json_each`` / ``json_each_text`` / ``json_array_elements_text`` on PostgreSQL; the latest
inventory comes from a window function. No row becomes a Python object: memory grows with the
fleet (devices x bundles x labels and bins), never with the number of windows or minutes.
Parts add up into the ``Summary`` of a device, group or bundle (``cloud.monitor.summarize_parts``);
latency figures stay inference-weighted sums until then.

A range starts at the bucket ``since`` falls in, counted whole: its minute, or its hour where the
rollups were compacted (``cloud.compaction``: an hour's minutes cannot be told apart any more), so a
range of whole hours gives the same figures before and after compaction. Histograms with other bins than the rest of a
subject's are summed apart; the summary keeps, per statistic, the bins with the most mass."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, bindparam, cast, func, or_, select, text
from sqlalchemy.orm import Session

from cloud.rollup import bucket_of, hour_of
from cloud.store import TelemetryRollup, UTCDateTime
from contract.base import MAX_INT

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Key = tuple[str, str | None]  # (device, bundle sha256)

_SQL = {
    "sqlite": {
        "labels": "SELECT r.device_id, r.bundle_sha256, j.key, TOTAL(j.value) FROM telemetry_rollups r, "
                  "json_each(r.predictions) j WHERE {where} GROUP BY 1, 2, 3",
        "bins": "SELECT r.device_id, r.bundle_sha256, s.key, e.key, c.key, TOTAL(c.value) FROM telemetry_rollups r, "
                "json_each(r.histograms) s, json_each(s.value) e, json_each(e.value) c WHERE {where} "
                "GROUP BY 1, 2, 3, 4, 5",
        "inventory": "SELECT device_id, bundle_sha256, inventory_at, inventory FROM (SELECT r.device_id, "
                     "r.bundle_sha256, r.inventory_at, json(r.inventory) AS inventory, ROW_NUMBER() OVER (PARTITION BY "
                     "r.device_id, r.bundle_sha256 ORDER BY r.inventory_at DESC, r.bucket DESC) AS n FROM "
                     "telemetry_rollups r WHERE {where} AND r.inventory_at IS NOT NULL) WHERE n = 1",
    },
    "postgresql": {
        "labels": "SELECT r.device_id, r.bundle_sha256, j.key, SUM(CAST(j.value AS NUMERIC)) FROM telemetry_rollups r "
                  "CROSS JOIN LATERAL json_each_text(r.predictions) j WHERE {where} GROUP BY 1, 2, 3",
        "bins": "SELECT r.device_id, r.bundle_sha256, s.key, e.key, c.n - 1, SUM(CAST(c.v AS NUMERIC)) FROM "
                "telemetry_rollups r CROSS JOIN LATERAL json_each(r.histograms) s CROSS JOIN LATERAL "
                "json_each(s.value) e CROSS JOIN LATERAL json_array_elements_text(e.value) WITH ORDINALITY AS c(v, n) "
                "WHERE {where} GROUP BY 1, 2, 3, 4, 5",
        "inventory": "SELECT device_id, bundle_sha256, inventory_at, inventory FROM (SELECT r.device_id, "
                     "r.bundle_sha256, r.inventory_at, CAST(r.inventory AS TEXT) AS inventory, ROW_NUMBER() OVER "
                     "(PARTITION BY r.device_id, r.bundle_sha256 ORDER BY r.inventory_at DESC, r.bucket DESC) AS n "
                     "FROM telemetry_rollups r WHERE {where} AND r.inventory_at IS NOT NULL) AS latest WHERE n = 1",
    },
}


@dataclass
class Part:
    """What one device sent on one bundle: sums only, so parts add up."""

    device_id: str
    bundle_sha256: str | None
    windows: int = 0
    inferences: int = 0
    errors: int = 0
    frames_skipped: int = 0
    latency: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # sum p50*n, sum p95*n, sum n
    model: list[float] = field(default_factory=lambda: [0.0, 0.0])  # sum model p95*n, sum n
    predictions: Counter[str] = field(default_factory=Counter)
    histograms: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)  # (stat, edges) -> bins
    inventory: dict[str, int] = field(default_factory=dict)
    inventory_at: datetime | None = None


@dataclass(frozen=True)
class Range:
    """Which rollups: from the bucket of ``since`` on, of these devices and bundles (None: all)."""

    since: datetime = EPOCH
    devices: Sequence[str] | None = None
    bundles: Sequence[str | None] | None = None

    def where(self) -> str:
        """As SQL text over ``telemetry_rollups r`` (``params`` binds it): the buckets ``clauses`` counts."""
        where = "r.bucket >= :hour AND (r.bucket >= :since OR r.minutes > 1)"
        if self.devices is not None:
            where += " AND r.device_id IN :devices"
        if self.bundles is not None:
            where += " AND r.bundle_sha256 IN :bundles"
        return where

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"since": bucket_of(self.since), "hour": hour_of(self.since)}
        if self.devices is not None:
            params["devices"] = list(self.devices) or ["\x00"]  # an empty IN matches nothing
        if self.bundles is not None:
            params["bundles"] = [b or "" for b in self.bundles] or ["\x00"]
        return params

    def clauses(self) -> list[ColumnElement[bool]]:
        """The rows counted: every bucket ``since`` falls in or that follows it, whole (the minute
        of ``since``, or its hour where that was compacted), of the devices and bundles."""
        r = TelemetryRollup
        out = [r.bucket >= hour_of(self.since), or_(r.bucket >= bucket_of(self.since), r.minutes > 1)]
        if self.devices is not None:
            out.append(r.device_id.in_(list(self.devices)))
        if self.bundles is not None:
            out.append(r.bundle_sha256.in_([b or "" for b in self.bundles]))
        return out


def run(session: Session, sql: dict[str, str], scope: Range, **columns: Any) -> Any:
    """One of the dialect's ``sql`` (``{where}`` for ``scope.where()``), bound to ``scope``."""
    dialect = session.get_bind().dialect.name
    if dialect not in sql:
        raise NotImplementedError(f"the store speaks SQLite and PostgreSQL, not {dialect}")
    params = scope.params()
    statement = text(sql[dialect].format(where=scope.where())).bindparams(
        bindparam("since", type_=UTCDateTime()), bindparam("hour", type_=UTCDateTime()),
        *(bindparam(name, expanding=True) for name in ("devices", "bundles") if name in params))
    return session.execute(statement.columns(**columns) if columns else statement, params)


def _query(session: Session, name: str, scope: Range) -> Any:
    types = {"inventory_at": UTCDateTime()} if name == "inventory" else {}
    return run(session, {dialect: queries[name] for dialect, queries in _SQL.items()}, scope, **types)


def parts(session: Session, since: datetime | None = None, devices: Sequence[str] | None = None,
          bundles: Sequence[str | None] | None = None) -> list[Part]:
    """The telemetry received since ``since`` (from its bucket on: ``Range.clauses``), summed per
    (device, bundle) in the database; only ``devices`` and ``bundles`` when given."""
    scope = Range(since or EPOCH, devices, bundles)
    r = TelemetryRollup
    counts = (func.sum(cast(c, Float)) for c in (r.windows, r.inferences, r.errors, r.frames_skipped))  # no overflow
    query = select(r.device_id, r.bundle_sha256, *counts, func.sum(r.latency_p50_sum), func.sum(r.latency_p95_sum),
                   func.sum(r.latency_n), func.sum(r.model_p95_sum), func.sum(r.model_n)).where(
        *scope.clauses()).group_by(r.device_id, r.bundle_sha256)
    out: dict[Key, Part] = {}
    for device, sha, *sums, l50, l95, ln, m95, mn in session.execute(query):
        windows, inferences, errors, skipped = (min(int(x or 0), MAX_INT) for x in sums)
        out[(device, sha or None)] = Part(device, sha or None, windows, inferences, errors, skipped,
                                          latency=[float(l50 or 0), float(l95 or 0), float(ln or 0)],
                                          model=[float(m95 or 0), float(mn or 0)])
    for device, sha, label, value in _query(session, "labels", scope):
        if (device, sha or None) in out:
            out[(device, sha or None)].predictions[label] += int(value)
    for device, sha, stat, edges, index, value in _query(session, "bins", scope):
        if (device, sha or None) in out:
            bins = out[(device, sha or None)].histograms.setdefault((stat, edges), {})
            bins[int(index)] = bins.get(int(index), 0) + int(value)
    for device, sha, inventory_at, inventory in _query(session, "inventory", scope):
        if (device, sha or None) in out:
            part = out[(device, sha or None)]
            part.inventory, part.inventory_at = json.loads(inventory), inventory_at
    return list(out.values())
