"""Time series for the dashboard's device and bundle pages, from the rollups: per step (a whole
number of minutes) and bundle, windows, inferences, error rate, inference-weighted latency p50/p95,
the model's p95 and the prediction drift (Jensen-Shannon of label rates) against that bundle's
reference profile. Steps are aligned to the epoch; points without telemetry are absent (a gap, never
a zero)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, bindparam, cast, func, select, text
from sqlalchemy.orm import Session

from cloud.aggregate import EPOCH
from cloud.drift import label_js
from cloud.queries.models import SeriesPoint, View
from cloud.rollup import bucket_of
from cloud.store import BundleRow, TelemetryRollup, UTCDateTime

_LABELS = {
    "sqlite": "SELECT r.bucket, r.bundle_sha256, j.key, TOTAL(j.value) FROM telemetry_rollups r, "
              "json_each(r.predictions) j WHERE {where} GROUP BY 1, 2, 3",
    "postgresql": "SELECT r.bucket, r.bundle_sha256, j.key, SUM(CAST(j.value AS NUMERIC)) FROM telemetry_rollups r "
                  "CROSS JOIN LATERAL json_each_text(r.predictions) j WHERE {where} GROUP BY 1, 2, 3",
}


class SeriesFilter(View):
    device: str | None = None
    bundle: str | None = None  # a full sha256


def _step(at: datetime, step: timedelta) -> datetime:
    """The start of the step ``at`` falls in; steps are aligned to the Unix epoch (whole hours for 60)."""
    return EPOCH + ((at - EPOCH) // step) * step


def series(session: Session, where: SeriesFilter, since: datetime, step_minutes: int) -> list[SeriesPoint]:
    since, step = bucket_of(since), timedelta(minutes=step_minutes)
    r = TelemetryRollup
    query = select(r.bucket, r.bundle_sha256, *(func.sum(cast(c, Float)) for c in (
        r.windows, r.inferences, r.errors, r.latency_p50_sum, r.latency_p95_sum, r.latency_n, r.model_p95_sum,
        r.model_n))).where(r.bucket >= since).group_by(r.bucket, r.bundle_sha256)
    clauses, params = ["r.bucket >= :since"], dict[str, Any]({"since": since})
    if where.device is not None:
        query = query.where(r.device_id == where.device)
        clauses.append("r.device_id = :device")
        params["device"] = where.device
    if where.bundle is not None:
        query = query.where(r.bundle_sha256 == where.bundle)
        clauses.append("r.bundle_sha256 = :bundle")
        params["bundle"] = where.bundle
    sums: dict[tuple[datetime, str], list[float]] = defaultdict(lambda: [0.0] * 8)
    for bucket, sha, *values in session.execute(query):
        key = (_step(bucket, step), sha)
        sums[key] = [a + float(b or 0) for a, b in zip(sums[key], values, strict=True)]
    labels: dict[tuple[datetime, str], dict[str, float]] = defaultdict(dict)
    statement = text(_LABELS[session.get_bind().dialect.name].format(where=" AND ".join(clauses))).bindparams(
        bindparam("since", type_=UTCDateTime())).columns(bucket=UTCDateTime())
    for bucket, sha, label, value in session.execute(statement, params):
        counts = labels[(_step(bucket, step), sha)]
        counts[label] = counts.get(label, 0.0) + float(value)
    references = _references(session, {sha for _, sha in sums if sha})
    points = []
    for (at, sha), (windows, n, errors, l50, l95, ln, m95, mn) in sorted(sums.items()):
        reference, seen = references.get(sha), labels.get((at, sha))
        points.append(SeriesPoint(
            at=at, bundle=sha or None, windows=int(windows), inferences=int(n),
            error_rate=errors / (n + errors) if n + errors else 0.0,
            latency_p50_ms=l50 / ln if ln else None, latency_p95_ms=l95 / ln if ln else None,
            model_p95_ms=m95 / mn if mn else None,
            prediction_drift_js=label_js(reference, seen) if reference and seen else None))
    return points


def _references(session: Session, shas: set[str]) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(BundleRow).where(BundleRow.sha256.in_(sorted(shas)))).all() if shas else []
    return {b.sha256: dict((b.manifest.get("reference") or {}).get("prediction_rates") or {}) for b in rows}
