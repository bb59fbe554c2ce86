"""Telemetry summed in the database: one :class:`Part` per (device, bundle) over a time range,
from SQL aggregates (``GROUP BY device_id, bundle_sha256``; label counts and histogram bins summed
with ``json_each`` on SQLite, ``json_each_text`` / ``json_array_elements_text`` on PostgreSQL).
No telemetry row becomes a Python object: memory grows with the fleet (devices x bundles x
labels and bins), never with the number of windows. Parts add up into the ``Summary`` of a
device, group or bundle (``cloud.monitor.summarize_parts``); latency figures stay
inference-weighted sums until then.

Histograms with other bins than the rest of a subject's are summed apart; the summary keeps, per
statistic, the bins with the most mass (summing windows one by one kept the first window's)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, cast, func, select, text
from sqlalchemy.orm import Session

from cloud.store import TelemetryRow, UTCDateTime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Key = tuple[str, str | None]  # (device, bundle sha256)

_SQL = {
    "sqlite": {
        "labels": "SELECT t.device_id, t.bundle_sha256, j.key, TOTAL(j.value) FROM telemetry t, "
                  "json_each(t.payload, '$.{field}') j WHERE t.received_at >= :since GROUP BY 1, 2, 3",
        # each histogram's edges and counts taken out once (not once per bin): 2.2x faster
        "bins": "WITH h AS MATERIALIZED (SELECT t.device_id AS d, t.bundle_sha256 AS b, h.key AS s, "
                "json_extract(h.value, '$.edges') AS e, json_extract(h.value, '$.counts') AS counts FROM telemetry t, "
                "json_each(t.payload, '$.input_stats.histograms') h WHERE t.received_at >= :since) "
                "SELECT d, b, s, e, c.key, TOTAL(c.value) FROM h, json_each(h.counts) c GROUP BY 1, 2, 3, 4, 5",
        "inventory": "SELECT device_id, bundle_sha256, window_end, inventory FROM (SELECT device_id, bundle_sha256, "
                     "window_end, json_extract(payload, '$.inventory') AS inventory, ROW_NUMBER() OVER (PARTITION BY "
                     "device_id, bundle_sha256 ORDER BY window_end DESC, id DESC) AS n FROM telemetry WHERE "
                     "received_at >= :since AND json_extract(payload, '$.inventory') != '{{}}') WHERE n = 1",
    },
    "postgresql": {
        "labels": "SELECT t.device_id, t.bundle_sha256, j.key, SUM(CAST(j.value AS NUMERIC)) FROM telemetry t "
                  "CROSS JOIN LATERAL json_each_text(t.payload -> '{field}') j WHERE t.received_at >= :since "
                  "GROUP BY 1, 2, 3",
        "bins": "SELECT t.device_id, t.bundle_sha256, h.key, CAST(h.value -> 'edges' AS TEXT), c.n - 1, "
                "SUM(CAST(c.v AS NUMERIC)) FROM telemetry t CROSS JOIN LATERAL "
                "json_each(t.payload -> 'input_stats' -> 'histograms') h CROSS JOIN LATERAL "
                "json_array_elements_text(h.value -> 'counts') WITH ORDINALITY AS c(v, n) "
                "WHERE t.received_at >= :since GROUP BY 1, 2, 3, 4, 5",
        "inventory": "SELECT device_id, bundle_sha256, window_end, inventory FROM (SELECT device_id, bundle_sha256, "
                     "window_end, CAST(payload -> 'inventory' AS TEXT) AS inventory, ROW_NUMBER() OVER (PARTITION BY "
                     "device_id, bundle_sha256 ORDER BY window_end DESC, id DESC) AS n FROM telemetry WHERE "
                     "received_at >= :since AND CAST(payload -> 'inventory' AS TEXT) != '{{}}') AS latest "
                     "WHERE n = 1",
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


def _query(session: Session, name: str, since: datetime, **fmt: str) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in _SQL:
        raise NotImplementedError(f"the store speaks SQLite and PostgreSQL, not {dialect}")
    statement = text(_SQL[dialect][name].format(**fmt)).bindparams(bindparam("since", type_=UTCDateTime()))
    if name == "inventory":
        statement = statement.columns(window_end=UTCDateTime())  # type: ignore[assignment]
    return session.execute(statement, {"since": since})


def parts(session: Session, since: datetime | None = None) -> list[Part]:
    """The telemetry received since ``since``, summed per (device, bundle) in the database."""
    since = since or EPOCH
    row, n = TelemetryRow, cast(TelemetryRow.inferences, Float)
    p50, p95 = row.payload[("latency_ms", "p50")].as_float(), row.payload[("latency_ms", "p95")].as_float()
    model_p95 = row.payload[("model_latency_ms", "p95")].as_float()
    counted = and_(row.inferences > 0, p95.is_not(None))
    model_counted = and_(row.inferences > 0, model_p95.is_not(None))
    totals = session.execute(select(
        row.device_id, row.bundle_sha256, func.count(), func.sum(n), func.sum(cast(row.errors, Float)),
        func.sum(case((counted, p50 * n), else_=0.0)), func.sum(case((counted, p95 * n), else_=0.0)),
        func.sum(case((counted, n), else_=0.0)), func.sum(case((model_counted, model_p95 * n), else_=0.0)),
        func.sum(case((model_counted, n), else_=0.0)),
    ).where(row.received_at >= since).group_by(row.device_id, row.bundle_sha256))
    out: dict[Key, Part] = {}
    for device, sha, windows, inferences, errors, l50, l95, ln, m95, mn in totals:
        out[(device, sha)] = Part(device, sha, int(windows), int(inferences or 0), int(errors or 0),
                                  latency=[float(l50 or 0), float(l95 or 0), float(ln or 0)],
                                  model=[float(m95 or 0), float(mn or 0)])
    for device, sha, label, value in _query(session, "labels", since, field="predictions"):
        if (device, sha) in out:
            out[(device, sha)].predictions[label] += int(value)
    for device, sha, _, value in _query(session, "labels", since, field="frames_skipped"):
        if (device, sha) in out:
            out[(device, sha)].frames_skipped += int(value)
    for device, sha, stat, edges, index, value in _query(session, "bins", since):
        if (device, sha) in out:
            bins = out[(device, sha)].histograms.setdefault((stat, edges), {})
            bins[int(index)] = bins.get(int(index), 0) + int(value)
    for device, sha, window_end, inventory in _query(session, "inventory", since):
        if (device, sha) in out:
            out[(device, sha)].inventory, out[(device, sha)].inventory_at = json.loads(inventory), window_end
    return list(out.values())
