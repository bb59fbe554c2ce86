"""What the dashboard and the API show of a rollout and a device: the current wave's gates
evaluated live are the verdicts the controller stores when it judges the wave (the same code on
the same evidence), the API's ``/rollouts/{id}/gates`` answers with them, the timeline names the
operator and the device's reasons, and a device's time series has gaps where nothing ran and
error rates in 0..1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

import cloud.queries.device_series
from cloud import rollouts
from cloud.api import create_app
from cloud.fleet import add_bundle, bundle_ref
from cloud.ingest import ingest
from cloud.operations import Operations
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.queries import Queries
from cloud.queries.device_series import MAX_BUCKETS, bucket_seconds
from cloud.queries.live import LiveCache
from cloud.store import BundleRow, Device, RolloutDevice
from contract import topics
from contract.common import LatencyStats
from contract.events import JobEvent
from contract.jobs import JobState
from contract.telemetry import Telemetry
from tests.cloud.test_controller import _controller
from tests.waiting import until

TOKEN = "t0ken-for-the-live-gates"


def window(device: str, seq: int, ref: dict[str, object] | None, end: datetime, inferences: int = 40,
           errors: int = 1) -> bytes:
    return Telemetry(device_id=device, seq=seq, window_start=end - timedelta(seconds=10), window_end=end,
                     bundle=ref, inferences=inferences, errors={"E": errors} if errors else {},
                     latency_ms=LatencyStats(p50=3.0 + seq % 3, p95=6.0 + seq % 3, p99=9.0, max=9.0, mean=4.0),
                     predictions={"milk": inferences // 2, "cheese": inferences - inferences // 2},
                     inventory={"milk": 2, "cheese": 1}).to_json()


def test_live_gates_are_the_verdicts_the_controller_then_stores(sessions: sessionmaker[Session],
                                                               world: dict[str, object]) -> None:
    """On SQLite and PostgreSQL (the timeline's job ids are concatenated in SQL)."""
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        row = add_bundle(session, bundle.tarball, world["trust"])  # type: ignore[arg-type]
        sha, ref = row.sha256, bundle_ref(row).model_dump(mode="json")
        session.add_all([Device(id="d1", online=True, groups=["eu"]), Device(id="d2", online=True, groups=["eu"])])
    plan = RolloutPlan(waves="100%", gates=Gates(min_inferences=50, min_success_ratio=0.5),
                       timeouts=Timeouts(ack_s=1, observe_s=600))
    rollout = rollouts.start(sessions, sha, plan, "r-live")
    wall = [datetime.now(UTC)]
    controller, _ = _controller(sessions, bundle.tarball, wall)
    controller.step()
    wall[0] += timedelta(seconds=2)
    controller.step()
    queries = Queries(sessions)
    assert [w.judged for w in queries.gates(rollout).waves] == [False]  # live from the wave's start
    with sessions.begin() as session:
        job = session.get(RolloutDevice, (rollout, "d2")).job_id  # type: ignore[union-attr]
        session.get(RolloutDevice, (rollout, "d1")).state = JobState.SUCCEEDED.value  # type: ignore[union-attr]
        event = JobEvent(device_id="d2", ts=datetime.now(UTC), job_id=job, state=JobState.FAILED,
                         reason="golden check failed: output 3 off by 0.4")
        ingest(session, topics.events("d2"), event.to_json())
        for seq in range(1, 4):
            ingest(session, topics.telemetry("d1"), window("d1", seq, ref, datetime.now(UTC)))
    controller.step()  # every job ended: the wave settles and is observed for observe_s
    live = queries.gates(rollout)
    assert [(w.wave, w.judged) for w in live.waves] == [(1, False)]
    values = {g.gate: (g.value, g.limit, g.passed) for g in live.waves[0].gates}
    assert values["job_success"] == (0.5, 0.5, True)
    assert values["error_rate"][0] == 3 / 123 and values["error_rate"][2] is False  # 3 errors in 120 + 3
    client = TestClient(create_app(sessions, TOKEN))
    answer = client.get(f"/rollouts/{rollout}/gates", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json() == live.model_dump(mode="json")
    operator = Operations(sessions, "token:alice")
    operator.rollout("pause", rollout)
    operator.rollout("resume", rollout)
    wall[0] += timedelta(seconds=601)
    for _ in range(3):
        controller.step()
    until(controller.publisher.idle, "the wave's chunk stream to end")
    judged = queries.gates(rollout)
    assert [(w.wave, w.judged) for w in judged.waves] == [(1, True)]
    assert judged.waves[0].gates == live.waves[0].gates  # what was shown live is what was judged
    assert judged.status == rollouts.FAILED  # the error rate failed it (and no device had activated it)
    timeline = queries.timeline(rollout)
    texts = [t.text for t in timeline]
    assert any("golden check failed" in t for t in texts) and any(t.startswith("gate_failed") for t in texts)
    assert [(t.actor, t.text) for t in timeline if t.kind == "operator"] == [
        ("token:alice", "rollout.resume: ok"), ("token:alice", "rollout.pause: ok")]
    assert timeline[-1].kind == "created" and timeline == sorted(timeline, key=lambda t: t.at, reverse=True)


def test_a_device_series_has_gaps_units_and_bounded_buckets(sessions: sessionmaker[Session], world: dict[str, object],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite and PostgreSQL (latency is read from the windows' JSON in SQL)."""
    bundle = world["bundles"][5]  # type: ignore[index]
    clock = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    with sessions.begin() as session:
        row = add_bundle(session, bundle.tarball, world["trust"])  # type: ignore[arg-type]
        ref = bundle_ref(row).model_dump(mode="json")
        session.add(Device(id="d1", online=True))
        for seq, minutes in enumerate((300, 299, 120, 119, 5), start=1):  # two bursts, a silence, one late window
            end = clock - timedelta(minutes=minutes)
            ingest(session, topics.telemetry("d1"), window("d1", seq, ref, end, errors=seq % 2))
        reference = session.get(BundleRow, row.sha256).manifest["reference"]  # type: ignore[union-attr]
    series = Queries(sessions, clock=lambda: clock).device_series("d1", hours=6)
    assert series.bucket_s == bucket_seconds(timedelta(hours=6)) == 300 and len(series.t) <= MAX_BUCKETS + 1
    assert sum(series.windows) == 5 and sum(series.inferences) == 200
    ran = [i for i, n in enumerate(series.windows) if n]
    assert len(ran) == 3 and series.error_rate[ran[0]] == 1 / 81  # windows 1 and 2 share a bucket
    assert all(series.error_rate[i] is None and series.latency_p95_ms[i] is None
               for i in range(len(series.t)) if i not in ran)  # gaps, never zeros
    assert all(0 <= r <= 1 for r in series.error_rate if r is not None)
    assert series.latency_p95_ms[ran[-1]] == 6.0 + 5 % 3
    assert reference["prediction_rates"] and all(series.prediction_drift_js[i] is not None for i in ran)
    assert series.inventory == {"milk": 2, "cheese": 1} and series.t == sorted(series.t)
    assert series.t[0] <= (clock - timedelta(hours=6)).timestamp() < series.t[0] + series.bucket_s
    assert series.sampled == 1 and not series.truncated
    monkeypatch.setattr(cloud.queries.device_series, "MAX_PAYLOADS", 2)  # drift from a sample, counts from every window
    thin = Queries(sessions, clock=lambda: clock).device_series("d1", hours=6)
    assert thin.sampled == 3 and thin.windows == series.windows and thin.error_rate == series.error_rate
    assert thin.latency_p95_ms == series.latency_p95_ms
    assert 0 < sum(v is not None for v in thin.prediction_drift_js) < len(ran)


def test_a_wave_is_evaluated_live_at_most_once_per_ttl() -> None:
    """A large wave's evidence is many telemetry windows: the API and the dashboard, which share
    one ``Queries``, evaluate it at most once per LIVE_TTL_S and show that same evaluation."""
    wall, evaluated = [0.0], []
    cache = LiveCache(ttl_s=10, clock=lambda: wall[0])

    def evaluate() -> None:
        evaluated.append(wall[0])

    for at in (0.0, 9.9, 10.0, 15.0):
        wall[0] = at
        cache.get(("r", 0), evaluate)
    cache.get(("r", 1), evaluate)  # the next wave: evaluated at once
    assert evaluated == [0.0, 10.0, 15.0]
