"""The cloud's alert check (``cloud.monitor.check_alerts``, every 60 s over the last 15 minutes of
telemetry) and the monitor (``monitor(session, "group")``, what ``/telemetry/summary`` and
``coldchain monitor`` run): time and peak Python memory (tracemalloc) over N telemetry windows of
D devices on two bundles (predictions over 8 labels, three 32-bin input histograms, latency).

    python -m benchmarks.alerts [--windows 20000] [--devices 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

from cloud import rollup
from cloud.monitor import check_alerts, monitor
from cloud.store import Base, BundleRow, Device, TelemetryRow, open_store, sqlite_url
from contract.common import BundleRef, Histogram, LatencyStats
from contract.telemetry import InputStats, Telemetry

LABELS = ["apple", "banana", "can", "milk_carton", "egg", "cheese", "yoghurt", "juice"]
EDGES = [float(i * 8) for i in range(33)]


def bundle(sequence: int) -> BundleRow:
    sha = (str(sequence) * 64)[:64]
    reference = {"samples": 1000, "prediction_rates": {k: 1 / len(LABELS) for k in LABELS},
                 "input_histograms": {s: {"edges": EDGES, "counts": [10] * 32}
                                      for s in ("brightness", "contrast", "saturation")}}
    return BundleRow(sha256=sha, model_name="fridge", model_version=str(sequence), target="t", sequence=sequence,
                     tarball="/nonexistent", artifact_sha256=sha, size=1, manifest={"reference": reference})


def fill(url: str, windows: int, devices: int) -> None:
    sessions = open_store(url)
    engine = sessions.kw["bind"]
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    refs = []
    with sessions.begin() as session:
        for sequence in (1, 2):
            row = bundle(sequence)
            session.add(row)
            refs.append(BundleRef(model_name="fridge", model_version=str(sequence), target="t", sequence=sequence,
                                  sha256=row.sha256))
        session.add_all(Device(id=f"fridge-{d:04d}", groups=[f"site-{d % 10}"], tags={}, reported_groups=[])
                        for d in range(devices))
    rows, batch = [], []
    for i in range(windows):
        device = f"fridge-{i % devices:04d}"
        skew = 3 if i % 2 else 0  # the second bundle drifts: alerts are raised
        w = Telemetry(device_id=device, seq=i, window_start=now - timedelta(seconds=61), window_end=now,
                      bundle=refs[i % 2], inferences=60, errors={"RuntimeError": i % 3},
                      predictions={k: 5 + (skew * 30 if k == "apple" else 0) for k in LABELS},
                      inventory={"apple": i % 4}, latency_ms=LatencyStats(p50=1.1, p95=2.0, p99=2.5, mean=1.2, max=3),
                      model_latency_ms=LatencyStats(p50=0.5, p95=0.9, p99=1.0, mean=0.6, max=1.2),
                      input_stats=InputStats(histograms={s: Histogram(edges=EDGES, counts=[(i + b) % 7 for b in
                                                                                          range(32)])
                                                         for s in ("brightness", "contrast", "saturation")}))
        rows.append({"device_id": device, "seq": i, "bundle_sha256": w.bundle.sha256 if w.bundle else None,
                     "window_start": w.window_start, "window_end": w.window_end, "inferences": w.inferences,
                     "errors": sum(w.errors.values()), "latency_p95": 2.0, "payload": w.model_dump(mode="json"),
                     "received_at": now})
        batch.append(w)
        if len(rows) == 2000 or i == windows - 1:
            with sessions.begin() as session:
                session.execute(insert(TelemetryRow), rows)
                for window in batch:  # what monitoring reads (ingestion does the same per stored window)
                    rollup.add(session, window, now)
            rows, batch = [], []
    engine.dispose()


def measure(url: str, work: Callable[[object], object]) -> tuple[float, float, int]:
    """Seconds (untraced), peak MiB under tracemalloc, and what it returned (its length)."""
    sessions = open_store(url)
    since = datetime.now(UTC) - timedelta(minutes=15)
    with sessions.begin() as session:
        gc.collect()
        started = time.perf_counter()
        result = work((session, since))
        seconds = time.perf_counter() - started
        session.rollback()  # the next run raises the same alerts again
    with sessions.begin() as session:
        gc.collect()
        tracemalloc.start()
        work((session, since))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        session.rollback()
    sessions.kw["bind"].dispose()
    return seconds, peak, len(result)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--postgres", default=None, help="postgresql://user@host:port/db to measure too")
    args = parser.parse_args()
    table = Table(title=f"Alert check and monitor over {args.windows:,} telemetry windows of {args.devices} devices")
    for column in ("store", "what", "seconds", "peak MiB (tracemalloc)", "rows/alerts out"):
        table.add_column(column, justify="left" if column in ("store", "what") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("SQLite", sqlite_url(Path(tmp) / "alerts.db"))]
        if args.postgres:
            stores.append(("PostgreSQL", args.postgres))
        for name, url in stores:
            fill(url, args.windows, args.devices)
            checks: list[tuple[str, Callable[[object], object]]] = [
                ("check_alerts (15 min)", lambda a: check_alerts(*a)),  # type: ignore[misc]
                ("monitor by group", lambda a: monitor(a[0], "group", a[1])),  # type: ignore[index]
                ("monitor by device", lambda a: monitor(a[0], "device", a[1]))]  # type: ignore[index]
            for what, work in checks:
                seconds, peak, out = measure(url, work)
                table.add_row(name, what, f"{seconds:.2f}", f"{peak:.1f}", str(out))
    Console().print(table)


if __name__ == "__main__":
    main()
