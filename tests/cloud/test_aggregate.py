"""Monitoring and the alert check from aggregates in the database (issue 12, finding 6): the
check loaded every telemetry row of the last 15 minutes into Python (6 s and 570 MiB over 20,000
rows). It must load no telemetry row, stay within a small memory bound, and give exactly what
summing the windows one by one gives."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.ingest import ingest
from cloud.monitor import check_alerts, monitor, summarize, windows
from cloud.store import BundleRow, Device, TelemetryRow
from contract import topics
from contract.common import BundleRef, Histogram, LatencyStats
from contract.telemetry import InputStats, Telemetry

EDGES = [float(i * 8) for i in range(33)]
STATS = ("brightness", "contrast")


def fill(sessions: sessionmaker[Session], count: int, devices: int = 20, odd_edges: bool = False) -> datetime:
    """``odd_edges``: every 13th window's histograms have other bins (those are summed apart)."""
    now = datetime.now(UTC)
    refs = []
    with sessions.begin() as session:
        for sequence in (1, 2):
            sha = (str(sequence) * 64)[:64]
            session.add(BundleRow(sha256=sha, model_name="fridge", model_version=str(sequence), target="t",
                                  sequence=sequence, tarball="/x", artifact_sha256=sha, size=1, manifest={
                                      "reference": {"samples": 10, "prediction_rates": {"apple": 0.5, "can": 0.5},
                                                    "input_histograms": {s: {"edges": EDGES, "counts": [5] * 32}
                                                                         for s in STATS}}}))
            refs.append(BundleRef(model_name="fridge", model_version=str(sequence), target="t", sequence=sequence,
                                  sha256=sha))
        session.add_all(Device(id=f"d{d}", groups=[f"g{d % 3}"], tags={}, reported_groups=["all"])
                        for d in range(devices))
    with sessions.begin() as session:
        for i in range(count):
            device = f"d{i % devices}"
            latency = None if i % 5 == 0 else LatencyStats(p50=1 + i % 3, p95=3 + i % 5, p99=9, mean=2, max=9)
            window = Telemetry(
                device_id=device, seq=i, window_start=now - timedelta(seconds=60 + i), window_end=now - timedelta(
                    seconds=i), bundle=None if i % 11 == 0 else refs[i % 2], inferences=(i * 7) % 50,
                errors={"E": i % 4} if i % 2 else {}, frames_skipped={"empty": i % 3},
                predictions={"apple": i % 9, "can": (i * 3) % 5, **({"egg": 1} if i % 2 else {})},
                inventory={} if i % 4 else {"apple": i % 6}, latency_ms=latency,
                model_latency_ms=latency if i % 3 else None,
                input_stats=InputStats(histograms={s: Histogram(edges=EDGES if i % 13 or not odd_edges else EDGES[:17],
                                                                counts=[(i + b) % 5 for b in
                                                                        range(32 if i % 13 or not odd_edges else 16)])
                                                   for s in STATS}))
            assert ingest(session, topics.telemetry(device), window.to_json()).kind == "stored"
    return now - timedelta(hours=1)


@pytest.fixture
def loads() -> list[int]:
    """Counts telemetry rows loaded as ORM objects."""
    loaded: list[int] = []

    def count(target: object, context: object) -> None:
        loaded.append(1)

    event.listen(TelemetryRow, "load", count)
    yield loaded
    event.remove(TelemetryRow, "load", count)


def test_summaries_from_aggregates_equal_summing_the_windows(sessions: sessionmaker[Session],
                                                              loads: list[int]) -> None:
    since = fill(sessions, 600)
    with sessions() as session:
        rows = session.scalars(select(TelemetryRow)).all()
        expected = {sha: summarize(windows([r for r in rows if (r.bundle_sha256 or "(none)") == sha]))
                    for sha in {r.bundle_sha256 or "(none)" for r in rows}}
        per_device = {d: summarize(windows([r for r in rows if r.device_id == d])) for d in {r.device_id for r in rows}}
    loads.clear()
    with sessions() as session:
        by_bundle = {row.bundles[0] if row.bundles else "(none)": row for row in monitor(session, "bundle", since)}
        by_device = {row.subject: row for row in monitor(session, "device", since)}
        by_group = {row.subject: row for row in monitor(session, "group", since)}
    assert loads == []  # not one telemetry row became a Python object
    assert set(by_bundle) == set(expected) and set(by_device) == set(per_device)
    for subject, got in [*((k, by_bundle[k].summary) for k in expected),
                         *((k, by_device[k].summary) for k in per_device)]:
        want = expected.get(subject) or per_device[subject]
        assert (got.windows, got.inferences, got.errors, got.frames_skipped, got.devices) == (
            want.windows, want.inferences, want.errors, want.frames_skipped, want.devices), subject
        assert got.predictions == want.predictions and got.inventory == want.inventory, subject
        for mine, theirs in ((got.latency_p50, want.latency_p50), (got.latency_p95, want.latency_p95),
                             (got.model_p95, want.model_p95)):
            assert mine == pytest.approx(theirs), subject
        assert {k: (h.edges, h.counts) for k, h in got.input_histograms.items()} == {
            k: (h.edges, h.counts) for k, h in want.input_histograms.items()}, subject
    assert by_group["all"].summary.windows == 600 and by_group["g0"].summary.devices == {
        f"d{d}" for d in range(20) if d % 3 == 0}
    assert by_bundle["1" * 64].reference_drift is not None


def test_the_alert_check_loads_no_rows_and_stays_small(sessions: sessionmaker[Session], loads: list[int]) -> None:
    since = fill(sessions, 3000, odd_edges=True)
    with sessions.begin() as session:
        loads.clear()
        tracemalloc.start()
        raised = check_alerts(session, since)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert loads == []
    assert raised, "the data drifts from the reference: the check must still see it"
    assert peak < 8 * 2**20, f"the alert check peaked at {peak / 2**20:.1f} MiB over 3,000 windows"


def test_histogram_bins_summing_past_the_limit_do_not_break_the_check(sessions: sessionmaker[Session]) -> None:
    """Found by the poison row: two windows with bins of 2**63 - 1 made every alert check fail."""
    from contract.base import MAX_INT

    now = datetime.now(UTC)
    with sessions.begin() as session:
        for seq in (1, 2):
            window = Telemetry(device_id="d1", seq=seq, window_start=now, window_end=now, inferences=MAX_INT,
                               input_stats=InputStats(histograms={"brightness": Histogram(edges=[0, 1],
                                                                                          counts=[MAX_INT])}))
            ingest(session, topics.telemetry("d1"), window.to_json())
    with sessions.begin() as session:
        (row,) = monitor(session, "device", now - timedelta(hours=1))
        check_alerts(session, now - timedelta(hours=1))
    assert row.summary.input_histograms["brightness"].counts == [MAX_INT]
