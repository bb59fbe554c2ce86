"""Time series for the dashboard's device and bundle pages, from the rollups: per step (a whole
number of minutes) and bundle, windows, inferences, error rate, inference-weighted latency p50/p95,
the model's p95 and the prediction drift (Jensen-Shannon of label rates) against that bundle's
reference profile. Steps are aligned to the epoch; points without telemetry are absent (a gap, never
a zero). Rollups compacted into hours (``cloud.compaction``, older than
``retention.rollup_minutes_days``) cannot be split: they make points of the step rounded up to whole
hours, and each point's ``minutes`` says what it spans. The first point may start before ``since``
(the bucket ``since`` falls in counts whole, as ``cloud.aggregate`` counts it)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.orm import Session

from cloud.aggregate import EPOCH, Range, run
from cloud.drift import label_js
from cloud.queries.models import SeriesPoint, View
from cloud.store import BundleRow, TelemetryRollup, UTCDateTime

_LABELS = {
    "sqlite": "SELECT r.bucket, r.minutes, r.bundle_sha256, j.key, TOTAL(j.value) FROM telemetry_rollups r, "
              "json_each(r.predictions) j WHERE {where} GROUP BY 1, 2, 3, 4",
    "postgresql": "SELECT r.bucket, r.minutes, r.bundle_sha256, j.key, SUM(CAST(j.value AS NUMERIC)) FROM "
                  "telemetry_rollups r CROSS JOIN LATERAL json_each_text(r.predictions) j WHERE {where} "
                  "GROUP BY 1, 2, 3, 4",
}
Point = tuple[datetime, int, str]  # start, minutes, bundle


class SeriesFilter(View):
    device: str | None = None
    bundle: str | None = None  # a full sha256


def _step(at: datetime, step: timedelta) -> datetime:
    """The start of the step ``at`` falls in; steps are aligned to the Unix epoch (whole hours for 60)."""
    return EPOCH + ((at - EPOCH) // step) * step


def _point(bucket: datetime, minutes: int, sha: str, step_minutes: int) -> Point:
    """The point a rollup row adds to: its step's, or, for an hourly row (compacted), that of a
    step of whole hours (the step rounded up to hours), which says so in its ``minutes``."""
    span = step_minutes if minutes <= 1 else -(-step_minutes // minutes) * minutes
    return _step(bucket, timedelta(minutes=span)), span, sha


def series(session: Session, where: SeriesFilter, since: datetime, step_minutes: int) -> list[SeriesPoint]:
    r, scope = TelemetryRollup, Range(since, None if where.device is None else [where.device],
                                      None if where.bundle is None else [where.bundle])
    query = select(r.bucket, r.minutes, r.bundle_sha256, *(func.sum(cast(c, Float)) for c in (
        r.windows, r.inferences, r.errors, r.latency_p50_sum, r.latency_p95_sum, r.latency_n, r.model_p95_sum,
        r.model_n))).where(*scope.clauses()).group_by(r.bucket, r.minutes, r.bundle_sha256)
    sums: dict[Point, list[float]] = defaultdict(lambda: [0.0] * 8)
    for bucket, minutes, sha, *values in session.execute(query):
        key = _point(bucket, minutes, sha, step_minutes)
        sums[key] = [a + float(b or 0) for a, b in zip(sums[key], values, strict=True)]
    labels: dict[Point, dict[str, float]] = defaultdict(dict)
    for bucket, minutes, sha, label, value in run(session, _LABELS, scope, bucket=UTCDateTime()):
        counts = labels[_point(bucket, minutes, sha, step_minutes)]
        counts[label] = counts.get(label, 0.0) + float(value)
    references = _references(session, {sha for _, _, sha in sums if sha})
    points = []
    for (at, span, sha), (windows, n, errors, l50, l95, ln, m95, mn) in sorted(sums.items()):
        reference, seen = references.get(sha), labels.get((at, span, sha))
        points.append(SeriesPoint(
            at=at, minutes=span, bundle=sha or None, windows=int(windows), inferences=int(n),
            error_rate=errors / (n + errors) if n + errors else 0.0,
            latency_p50_ms=l50 / ln if ln else None, latency_p95_ms=l95 / ln if ln else None,
            model_p95_ms=m95 / mn if mn else None,
            prediction_drift_js=label_js(reference, seen) if reference and seen else None))
    return points


def _references(session: Session, shas: set[str]) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(BundleRow).where(BundleRow.sha256.in_(sorted(shas)))).all() if shas else []
    return {b.sha256: dict((b.manifest.get("reference") or {}).get("prediction_rates") or {}) for b in rows}
