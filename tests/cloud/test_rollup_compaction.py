"""Compaction of the telemetry rollups, with an injected clock on SQLite and PostgreSQL: minute rows
older than ``retention.rollup_minutes_days`` are merged into one row per device, bundle and hour,
and monitoring, drift, a wave's gates and baseline and the series give the same figures for ranges
of whole hours; hourly rows past ``retention.rollup_hours_days`` are deleted and counted; a
compaction interrupted between its writes and its deletes counts nothing twice."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts, rollup
from cloud.config import Retention
from cloud.controller import Controller
from cloud.exports import to_csv
from cloud.fleet import add_bundle
from cloud.gates import evaluate
from cloud.monitor import monitor
from cloud.plan import Gates, RolloutPlan
from cloud.queries import Queries
from cloud.queries.records import telemetry
from cloud.queries.series import SeriesFilter, series
from cloud.retention import Retainer
from cloud.store import BundleRow, Device, Rollout, RolloutDevice, TelemetryRollup, open_store
from contract.common import BundleRef, Histogram, LatencyStats
from contract.manifest import Manifest
from contract.telemetry import InputStats, Telemetry

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # an hour's start
OLD = BundleRef(model_name="fridge", model_version="0", target="arm64-cortex-a72-ort", sequence=1, sha256="0" * 64)
MINUTES = range(0, 180, 7)  # 26 minutes over three hours, the first one at the hour's start
GATES = Gates(min_inferences=10, max_input_drift=5.0)


def r(x: float | None) -> float | None:
    return None if x is None else round(x, 9)  # float sums re-associated: equal to rounding


def cell(text: str) -> object:
    try:
        return r(float(text))
    except ValueError:
        return text


def window(device: str, minute: int, n: int, bundle: BundleRef, reference: dict[str, Any]) -> Telemetry:
    end = T0 + timedelta(minutes=minute, seconds=10 + n)
    labels = sorted(reference["prediction_rates"])
    histograms = {stat: Histogram(edges=h["edges"], counts=[(i * 7 + minute + n) % 5 + 1 for i in
                                                           range(len(h["counts"]))])
                  for stat, h in reference["input_histograms"].items()}
    return Telemetry(device_id=device, seq=minute * 10 + n + 1, window_start=end - timedelta(seconds=10),
                     window_end=end, bundle=bundle, inferences=30 + minute % 4, errors={"E": (minute + n) % 2},
                     frames_skipped={"empty": minute % 3},
                     predictions={labels[(minute + n) % len(labels)]: 20, labels[0]: 10 + minute % 4},
                     inventory={labels[1]: minute % 5} if minute % 3 else {},
                     latency_ms=LatencyStats(p50=2.3, p95=4.1 + minute % 3 / 10, p99=6, mean=2, max=7),
                     model_latency_ms=LatencyStats(p50=1, p95=1.7 + minute % 2 / 10, p99=3, mean=1, max=3),
                     input_stats=InputStats(histograms=histograms))


@pytest.fixture
def fleet(sessions: sessionmaker[Session], world: dict[str, Any]) -> Iterator[tuple[str, Manifest]]:
    """d1 and d2 ran OLD and now run the world's bundle 5 (rollout r-c, its wave started at T0 + 1 h):
    windows on both bundles received at MINUTES after T0, two in each third minute."""
    with sessions.begin() as session:
        row = add_bundle(session, world["bundles"][5].tarball, world["trust"])
        new = BundleRef(model_name=row.model_name, model_version=row.model_version, target=row.target,
                        sequence=row.sequence, sha256=row.sha256)
        session.add_all([Device(id=d, online=True, active=OLD.model_dump(mode="json"), active_sha256=OLD.sha256)
                         for d in ("d1", "d2")])
    rollouts.start(sessions, row.sha256, RolloutPlan(waves="100%", gates=GATES), "r-c")
    with sessions.begin() as session:
        session.get(Rollout, "r-c").wave_started_at = T0 + timedelta(hours=1)  # type: ignore[union-attr]
        for d in ("d1", "d2"):
            session.get(RolloutDevice, ("r-c", d)).state = "SUCCEEDED"  # type: ignore[union-attr]
    for minute in MINUTES:
        with sessions.begin() as session:
            for d in ("d1", "d2"):
                for bundle in (OLD, new):
                    for n in range(2 if minute % 3 == 0 else 1):
                        rollup.add(session, window(d, minute, n, bundle, row.manifest["reference"]),
                                   T0 + timedelta(minutes=minute, seconds=30 + n))
    yield "r-c", Manifest.model_validate(row.manifest)


def figures(sessions: sessionmaker[Session], since: datetime | None = None) -> dict[str, Any]:
    """Everything that reads the rollups: monitoring by bundle and device (drift, PSI, inventory),
    the wave's evidence and gates (the new bundle since the wave began, the previous bundle's
    baseline), the hourly series and the CSV export."""
    with sessions() as session:
        rows = [(m.scope, m.subject, m.summary.windows, m.summary.inferences, m.summary.errors,
                 m.summary.frames_skipped, r(m.summary.latency_p50), r(m.summary.latency_p95),
                 r(m.summary.model_p95), dict(m.summary.predictions), m.summary.inventory,
                 {k: h.counts for k, h in m.summary.input_histograms.items()}, r(m.reference_drift),
                 r(m.input_psi)) for scope in ("bundle", "device") for m in monitor(session, scope, since)]  # type: ignore[arg-type]
        rollout = session.get(Rollout, "r-c")
        wave = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == "r-c")).all())
        evidence = Controller.evidence(session, rollout, wave)  # type: ignore[arg-type]
        manifest = Manifest.model_validate(session.get(BundleRow, rollout.bundle_sha256).manifest)  # type: ignore[union-attr]
        gates = [(g.gate, g.passed, r(g.value)) for g in evaluate(GATES, evidence, manifest)]
        export = to_csv(telemetry(session, "device", since), None)  # GET /telemetry/export
        points = [(p.at, p.bundle, p.minutes, p.windows, p.inferences, r(p.error_rate), r(p.latency_p95_ms),
                   r(p.model_p95_ms), r(p.prediction_drift_js))
                  for p in series(session, SeriesFilter(), since or T0, 60)]
    return {"monitor": rows, "gates": gates, "baseline": {k: r(v) for k, v in evidence.baseline.items()},
            "baseline_p95": r(evidence.baseline_model_p95), "wave": evidence.summary.inferences, "series": points,
            "export": [[cell(c) for c in line] for line in csv.reader(io.StringIO(export))]}


def rollups(sessions: sessionmaker[Session]) -> list[tuple[str, str, datetime, int]]:
    with sessions() as session:
        return [tuple(row) for row in session.execute(select(  # type: ignore[misc]
            TelemetryRollup.device_id, TelemetryRollup.bundle_sha256, TelemetryRollup.bucket, TelemetryRollup.minutes)
            .order_by(TelemetryRollup.device_id, TelemetryRollup.bundle_sha256, TelemetryRollup.bucket))]


def test_old_minutes_merge_into_hours_with_the_same_figures(sessions: sessionmaker[Session],
                                                            fleet: tuple[str, Manifest]) -> None:
    before, from_hour_1 = figures(sessions), figures(sessions, T0 + timedelta(hours=1))
    assert before["wave"] > 0 and before["baseline"] and {g[0] for g in before["gates"]} >= {
        "error_rate", "prediction_drift", "latency_p95", "input_drift"}
    assert len(rollups(sessions)) == 4 * len(MINUTES)  # (device, bundle) x minutes
    clock = [T0 + timedelta(days=10, minutes=90)]  # only the first hour is entirely past 10 days
    retainer = Retainer(sessions, Retention(batch=7), clock=lambda: clock[0])
    counts = retainer.step()
    first_hour = sum(1 for m in MINUTES if m < 60)
    assert counts["rollup_minutes"] == 4 * first_hour and counts["rollup_hours"] == 0
    kept = rollups(sessions)
    assert sorted((k[0], k[1], k[2]) for k in kept if k[3] == 60) == sorted(
        {(k[0], k[1], T0) for k in kept})  # one hourly row per (device, bundle), at the hour's start
    assert all(k[2] >= T0 + timedelta(hours=1) for k in kept if k[3] == 1)
    assert figures(sessions) == before

    clock[0] = T0 + timedelta(days=11)  # every hour past the age
    assert retainer.step()["rollup_minutes"] == 4 * (len(MINUTES) - first_hour)
    assert {(k[2], k[3]) for k in rollups(sessions)} == {(T0 + timedelta(hours=h), 60) for h in range(3)}
    assert figures(sessions) == before  # monitoring, drift, the gates, the baseline, the hourly series
    assert figures(sessions, T0 + timedelta(hours=1)) == from_hour_1  # a range of whole hours
    assert retainer.step()["rollup_minutes"] == 0  # done: nothing merged twice
    assert figures(sessions) == before

    # a range starting inside a compacted hour counts that whole hour (an hour cannot be split)
    assert figures(sessions, T0 + timedelta(minutes=90))["monitor"] == from_hour_1["monitor"]
    with sessions() as session:  # a 5-minute series over compacted data: one point per hour, saying so
        points = series(session, SeriesFilter(device="d1"), T0, 5)
    assert {(p.at, p.minutes) for p in points} == {(T0 + timedelta(hours=h), 60) for h in range(3)}
    entries = Queries(sessions).audit(action="retention").items
    assert [e.detail["deleted"]["rollup_minutes"] for e in entries] == [0, 4 * (len(MINUTES) - first_hour),
                                                                        4 * first_hour]
    assert [e.detail["merged_into_hours"] for e in entries] == [0, 8, 4]
    assert entries[0].detail["days"]["rollup_minutes"] == 10 and entries[0].detail["days"]["rollup_hours"] == 400


def test_hourly_rollups_past_their_ttl_are_deleted_and_counted(sessions: sessionmaker[Session],
                                                               fleet: tuple[str, Manifest]) -> None:
    clock = [T0 + timedelta(days=11)]
    retainer = Retainer(sessions, Retention(batch=5, rollup_hours_days=30), clock=lambda: clock[0])
    assert retainer.step()["rollup_hours"] == 0 and len(rollups(sessions)) == 12  # 4 x 3 hours
    with sessions.begin() as session:  # a device still sending 29 days later: recent minutes
        rollup.add(session, Telemetry(device_id="d1", seq=9999, window_start=T0, window_end=T0, inferences=5),
                   T0 + timedelta(days=29))
    clock[0] = T0 + timedelta(days=30, minutes=150)  # the first two hours are past 30 days
    counts = retainer.step()
    assert counts["rollup_hours"] == 8 and counts["rollup_minutes"] == 0
    assert {(k[2], k[3]) for k in rollups(sessions)} == {(T0 + timedelta(hours=2), 60),
                                                        (T0 + timedelta(days=29), 1)}
    clock[0] = T0 + timedelta(days=80)
    assert retainer.step() == {"telemetry": 0, "events": 0, "dead_letters": 0, "alert_deliveries": 0,
                             "alerts": 0, "audit": 0, "rollup_hours": 5, "rollup_minutes": 0}
    assert rollups(sessions) == []
    entries = Queries(sessions).audit(action="retention").items
    assert [e.detail["deleted"]["rollup_hours"] for e in entries] == [5, 8, 0]


def test_an_interrupted_compaction_counts_nothing_twice(sessions: sessionmaker[Session],
                                                        fleet: tuple[str, Manifest]) -> None:
    """The process dies after a batch's hourly rows are written and before its minute rows are
    deleted (the second batch's DELETE fails): that batch is rolled back whole, and the next run
    merges it once."""
    before = figures(sessions)
    engine = sessions.kw["bind"]
    deletes = [0]

    def die(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM TELEMETRY_ROLLUPS"):
            deletes[0] += 1
            if deletes[0] == 2:
                raise RuntimeError("killed between the hourly rows' writes and the minute rows' deletes")

    event.listen(engine, "before_cursor_execute", die)
    retainer = Retainer(sessions, Retention(batch=30), clock=lambda: T0 + timedelta(days=11))
    try:
        with pytest.raises(RuntimeError, match="killed"):
            retainer.step()
    finally:
        event.remove(engine, "before_cursor_execute", die)
    half = rollups(sessions)
    assert any(k[3] == 60 for k in half) and any(k[3] == 1 for k in half)  # the first batch merged, not the second
    assert figures(sessions) == before  # and nothing counted twice meanwhile
    assert retainer.step()["rollup_minutes"] > 0
    assert {k[3] for k in rollups(sessions)} == {60}
    assert figures(sessions) == before


def test_a_store_from_before_compaction_gets_minute_rows(sessions: sessionmaker[Session]) -> None:
    """Rollups of an older store (no ``minutes`` column) are minute rows once it is opened."""
    with sessions.begin() as session:
        rollup.add(session, Telemetry(device_id="d1", seq=1, window_start=T0, window_end=T0, inferences=5), T0)
    engine = sessions.kw["bind"]
    with engine.begin() as db:
        db.execute(text("DROP INDEX ix_telemetry_rollups_minutes_bucket"))
        db.execute(text("ALTER TABLE telemetry_rollups DROP COLUMN minutes"))
    reopened = open_store(engine.url.render_as_string(hide_password=False))
    indexes = {i["name"] for i in inspect(engine).get_indexes("telemetry_rollups")}
    assert "ix_telemetry_rollups_minutes_bucket" in indexes  # compaction's scan reads minute rows only
    assert rollups(reopened) == [("d1", "", T0, 1)]
    assert Retainer(reopened, Retention(), clock=lambda: T0 + timedelta(days=11)).step()["rollup_minutes"] == 1
    assert rollups(reopened) == [("d1", "", T0, 60)]
    reopened.kw["bind"].dispose()
