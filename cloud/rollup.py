"""The write side of the telemetry rollups (``store.TelemetryRollup``): each window stored is
added, in the same transaction, to the sums of its device, bundle and minute of reception.
Insert-if-absent, then the row is read ``FOR UPDATE`` (PostgreSQL; SQLite has one writer), so
concurrent ingestion workers add up instead of overwriting each other. The read side is
``cloud.aggregate``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.store import TelemetryRollup
from contract.base import MAX_INT
from contract.telemetry import Telemetry

BUCKET_S = 60


def bucket_of(when: datetime) -> datetime:
    """The minute ``when`` falls in (UTC)."""
    when = when.astimezone(UTC)
    return when.replace(second=0, microsecond=0)


def _row(session: Session, device_id: str, sha: str, bucket: datetime) -> TelemetryRollup:
    dialect = session.get_bind().dialect.name
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    session.execute(insert(TelemetryRollup).values(
        device_id=device_id, bundle_sha256=sha, bucket=bucket, windows=0, inferences=0, errors=0, frames_skipped=0,
        latency_p50_sum=0.0, latency_p95_sum=0.0, latency_n=0.0, model_p95_sum=0.0, model_n=0.0, predictions={},
        histograms={}).on_conflict_do_nothing(index_elements=["device_id", "bundle_sha256", "bucket"]))
    return session.execute(select(TelemetryRollup).where(
        TelemetryRollup.device_id == device_id, TelemetryRollup.bundle_sha256 == sha,
        TelemetryRollup.bucket == bucket).with_for_update()).scalar_one()


def _added(counts: dict[str, Any], more: dict[str, int]) -> dict[str, Any]:
    out = dict(counts)
    for key, value in more.items():
        out[key] = min(int(out.get(key, 0)) + int(value), MAX_INT)
    return out


def add(session: Session, window: Telemetry, received: datetime) -> None:
    """Add one stored window to its rollup row."""
    row = _row(session, window.device_id, window.bundle.sha256 if window.bundle else "", bucket_of(received))
    n = window.inferences
    row.windows = min(row.windows + 1, MAX_INT)  # each count is bounded, their sums saturate
    row.inferences = min(row.inferences + n, MAX_INT)
    row.errors = min(row.errors + sum(window.errors.values()), MAX_INT)
    row.frames_skipped = min(row.frames_skipped + sum(window.frames_skipped.values()), MAX_INT)
    if window.latency_ms is not None and n:
        row.latency_p50_sum += window.latency_ms.p50 * n
        row.latency_p95_sum += window.latency_ms.p95 * n
        row.latency_n += n
    if window.model_latency_ms is not None and n:
        row.model_p95_sum += window.model_latency_ms.p95 * n
        row.model_n += n
    if window.predictions:
        row.predictions = _added(row.predictions, dict(window.predictions))
    if window.input_stats.histograms:
        histograms = {stat: dict(by_edges) for stat, by_edges in row.histograms.items()}
        for stat, h in window.input_stats.histograms.items():
            edges = json.dumps(list(h.edges))
            counts = histograms.setdefault(stat, {}).get(edges) or [0] * len(h.counts)
            histograms[stat][edges] = [min(a + b, MAX_INT) for a, b in zip(counts, h.counts, strict=True)]
        row.histograms = histograms
    end = window.window_end if window.window_end.tzinfo is not None else window.window_end.replace(tzinfo=UTC)
    if window.inventory and (row.inventory_at is None or end >= row.inventory_at):
        row.inventory, row.inventory_at = dict(window.inventory), end
