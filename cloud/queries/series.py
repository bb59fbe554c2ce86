"""One device's telemetry as time series for its dashboard page: latency, error rate and drift
per time bucket, summed by the functions the fleet's monitoring uses (``cloud.monitor``), so a
bucket's figures mean what ``coldchain monitor`` means.

Buckets follow the windows' end (the device's clock: a backlog sent after an outage lands where
it was measured) over a range that holds at most ``MAX_BUCKETS``; empty buckets are gaps (None),
never zeros. At most ``MAX_WINDOWS`` windows are read, the newest."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.errors import NotFoundError
from cloud.monitor import input_drift, prediction_drift, summarize
from cloud.queries.models import View
from cloud.store import BundleRow, Device, TelemetryRow
from contract.manifest import ReferenceProfile
from contract.telemetry import Telemetry

MAX_BUCKETS = 120
MAX_WINDOWS = 5000
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
    rows = session.execute(select(TelemetryRow.payload, TelemetryRow.bundle_sha256).where(
        TelemetryRow.device_id == device_id, TelemetryRow.window_end >= since, TelemetryRow.window_end <= until)
        .order_by(TelemetryRow.window_end.desc()).limit(MAX_WINDOWS + 1)).all()
    truncated = len(rows) > MAX_WINDOWS
    buckets: dict[int, list[Telemetry]] = defaultdict(list)
    shas: dict[int, Counter[str]] = defaultdict(Counter)
    latest: Telemetry | None = None
    for payload, sha in rows[:MAX_WINDOWS]:
        window = Telemetry.model_validate(payload)
        index = (int(window.window_end.timestamp()) - start) // size
        buckets[index].append(window)
        if sha:
            shas[index][sha] += window.inferences + 1
        if window.inventory and (latest is None or window.window_end > latest.window_end):
            latest = window
    references = _references(session, {sha for c in shas.values() for sha in c})
    count = (int(until.timestamp()) - start) // size + 1
    view: dict[str, list[float | None]] = {k: [] for k in ("error", "p50", "p95", "js", "psi")}
    windows, inferences = [], []
    for index in range(count):
        s = summarize(buckets.get(index, []))
        reference = references.get(shas[index].most_common(1)[0][0]) if shas.get(index) else None
        ran = s.inferences + s.errors > 0
        windows.append(s.windows)
        inferences.append(s.inferences)
        view["error"].append(s.error_rate if ran else None)
        view["p50"].append(s.latency_p50)
        view["p95"].append(s.latency_p95)
        view["js"].append(prediction_drift(s, reference.prediction_rates) if reference else None)
        psis = input_drift(s, reference)
        view["psi"].append(max(psis.values()) if psis else None)
    return SeriesView(device=device_id, since=since, until=until, bucket_s=size,
                      t=[float(start + i * size) for i in range(count)], windows=windows, inferences=inferences,
                      error_rate=view["error"], latency_p50_ms=view["p50"], latency_p95_ms=view["p95"],
                      prediction_drift_js=view["js"], input_drift_psi=view["psi"],
                      inventory=dict(latest.inventory) if latest else {},
                      inventory_at=latest.window_end if latest else None, truncated=truncated)


def _references(session: Session, shas: set[str]) -> dict[str, ReferenceProfile]:
    if not shas:
        return {}
    out = {}
    for sha, manifest in session.execute(select(BundleRow.sha256, BundleRow.manifest)
                                         .where(BundleRow.sha256.in_(sorted(shas)))):
        if manifest.get("reference"):
            out[sha] = ReferenceProfile.model_validate(manifest["reference"])
    return out
