"""One device's telemetry as time series for its dashboard page: latency, error rate and drift
per time bucket, summed by the functions the fleet's monitoring uses (``cloud.monitor``), so a
bucket's figures mean what ``coldchain monitor`` means.

Buckets follow the windows' end (the device's clock: a backlog sent after an outage lands where
it was measured) over a range cut in at most ``MAX_BUCKETS``; empty buckets are gaps (None),
never zeros. Counts, errors and latency come from every window of the range (a few columns each,
up to ``MAX_WINDOWS``, the newest); drift needs the windows' label counts and histograms, so it is
computed from at most ``MAX_PAYLOADS`` of them, one in ``sampled`` spread over the range."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from sqlalchemy import Float, cast, select
from sqlalchemy.orm import Session

from cloud.aggregate import Part
from cloud.errors import NotFoundError
from cloud.monitor import input_drift, prediction_drift, summarize, summarize_parts
from cloud.queries.models import View
from cloud.store import BundleRow, Device, TelemetryRow
from contract.manifest import ReferenceProfile
from contract.telemetry import Telemetry

MAX_BUCKETS = 120
MAX_WINDOWS = 250_000  # a week of 3-second windows
MAX_PAYLOADS = 4000
NICE_S = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class SeriesView(View):
    device: str
    since: datetime
    until: datetime
    bucket_s: int
    t: list[float]  # each bucket's start, Unix seconds
    windows: list[int]
    inferences: list[int]
    error_rate: list[float | None]  # errors / (inferences + errors), 0..1; None: nothing ran in the bucket
    latency_p50_ms: list[float | None]  # per frame, inference-weighted over the bucket's windows
    latency_p95_ms: list[float | None]
    prediction_drift_js: list[float | None]  # Jensen-Shannon of label rates vs the bundle's reference profile
    input_drift_psi: list[float | None]  # the worst input statistic's PSI vs the reference profile
    inventory: dict[str, int]  # the latest window's (in the range)
    inventory_at: datetime | None
    sampled: int  # drift from one window in this many (1: every window)
    truncated: bool  # the range held more than MAX_WINDOWS windows: the oldest were left out


def bucket_seconds(span: timedelta) -> int:
    """The smallest round bucket that cuts ``span`` in at most MAX_BUCKETS."""
    wanted = span.total_seconds() / MAX_BUCKETS
    return next((s for s in NICE_S if s >= wanted), NICE_S[-1])


def device_series(session: Session, device_id: str, since: datetime, until: datetime) -> SeriesView:
    if session.get(Device, device_id) is None:
        raise NotFoundError(f"no device {device_id!r}: devices appear once they publish their state")
    size = bucket_seconds(until - since)
    start = int(since.timestamp()) // size * size
    count = (int(until.timestamp()) - start) // size + 1

    def bucket(end: datetime) -> int:
        return (int(end.timestamp()) - start) // size

    row = TelemetryRow
    mine = (row.device_id == device_id, row.window_end >= since, row.window_end <= until)
    n = cast(row.inferences, Float)
    light = session.execute(select(row.window_end, row.inferences, row.errors, row.payload[("latency_ms", "p50")]
                                   .as_float() * n, row.payload[("latency_ms", "p95")].as_float() * n)
                            .where(*mine).order_by(row.window_end.desc()).limit(MAX_WINDOWS + 1)).all()
    parts: dict[int, Part] = {}
    for end, inferences, errors, p50n, p95n in light[:MAX_WINDOWS]:
        part = parts.setdefault(bucket(end), Part(device_id, None))
        part.windows, part.inferences, part.errors = part.windows + 1, part.inferences + inferences, \
            part.errors + errors
        if inferences > 0 and p95n is not None and p50n is not None:
            part.latency = [part.latency[0] + p50n, part.latency[1] + p95n, part.latency[2] + inferences]
    sampled = max(1, math.ceil(min(len(light), MAX_WINDOWS) / MAX_PAYLOADS))
    heavy = session.execute(select(row.payload, row.bundle_sha256).where(*mine, row.id % sampled == 0)
                            .order_by(row.window_end.desc()).limit(MAX_PAYLOADS)).all()
    windows: dict[int, list[Telemetry]] = defaultdict(list)
    shas: dict[int, Counter[str]] = defaultdict(Counter)
    for payload, sha in heavy:
        window = Telemetry.model_validate(payload)
        windows[bucket(window.window_end)].append(window)
        if sha:
            shas[bucket(window.window_end)][sha] += window.inferences + 1
    references = _references(session, {sha for c in shas.values() for sha in c})
    out: dict[str, list[float | None]] = {k: [] for k in ("error", "p50", "p95", "js", "psi")}
    for index in range(count):
        s = summarize_parts([parts[index]] if index in parts else [])
        out["error"].append(s.error_rate if s.inferences + s.errors > 0 else None)
        out["p50"].append(s.latency_p50)
        out["p95"].append(s.latency_p95)
        labels = summarize(windows.get(index, []))
        reference = references.get(shas[index].most_common(1)[0][0]) if shas.get(index) else None
        out["js"].append(prediction_drift(labels, reference.prediction_rates) if reference else None)
        psis = input_drift(labels, reference)
        out["psi"].append(max(psis.values()) if psis else None)
    inventory, at = _inventory(session, mine)
    return SeriesView(device=device_id, since=since, until=until, bucket_s=size,
                      t=[float(start + i * size) for i in range(count)],
                      windows=[parts[i].windows if i in parts else 0 for i in range(count)],
                      inferences=[parts[i].inferences if i in parts else 0 for i in range(count)],
                      error_rate=out["error"], latency_p50_ms=out["p50"], latency_p95_ms=out["p95"],
                      prediction_drift_js=out["js"], input_drift_psi=out["psi"], inventory=inventory,
                      inventory_at=at, sampled=sampled, truncated=len(light) > MAX_WINDOWS)


def _inventory(session: Session, mine: tuple[object, ...]) -> tuple[dict[str, int], datetime | None]:
    """The newest window of the range that reported an inventory (the newest 50 looked at)."""
    for payload, end in session.execute(select(TelemetryRow.payload, TelemetryRow.window_end).where(*mine)  # type: ignore[arg-type]
                                        .order_by(TelemetryRow.window_end.desc()).limit(50)):
        if payload.get("inventory"):
            return {str(k): int(v) for k, v in payload["inventory"].items()}, end
    return {}, None


def _references(session: Session, shas: set[str]) -> dict[str, ReferenceProfile]:
    if not shas:
        return {}
    out = {}
    for sha, manifest in session.execute(select(BundleRow.sha256, BundleRow.manifest)
                                         .where(BundleRow.sha256.in_(sorted(shas)))):
        if manifest.get("reference"):
            out[sha] = ReferenceProfile.model_validate(manifest["reference"])
    return out
