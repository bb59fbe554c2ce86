"""The query layer the CLI, the API and the dashboard share: filters and paging run in the store
(SQLite and PostgreSQL), answers are the pydantic views, and "last seen" moves with any message."""

from __future__ import annotations

import queue
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

import cloud.ingest
from cloud.errors import NotFoundError
from cloud.ingest import IngestWorker, ingest
from cloud.operations import Operations
from cloud.queries import DeviceFilter, Paging, Queries
from cloud.store import Device
from contract import topics
from contract.common import BundleRef
from contract.state import DeviceState
from contract.telemetry import Telemetry
from transport.client import Received

OLD = datetime(2026, 1, 1, tzinfo=UTC)
SHA_A, SHA_B = "a1" * 32, "b2" * 32


def fleet(sessions: sessionmaker[Session], n: int = 30) -> None:
    """n devices: even ones in eu (reported), odd ones in us; every third offline; boards rpi4/rpi5;
    bundle A on ids below 10, B above."""
    with sessions.begin() as session:
        for i in range(n):
            device = f"fridge-{i:02d}"
            active = BundleRef(model_name="m", model_version="1", target="t", sequence=1 + (i >= 10),
                               sha256=SHA_A if i < 10 else SHA_B)
            state = DeviceState(device_id=device, online=True, board="rpi4" if i % 2 else "rpi5",
                                groups=["eu" if i % 2 == 0 else "us"], active=active, agent_version=f"0.{i}")
            ingest(session, topics.state(device), state.to_json())
            if i % 3 == 0:
                ingest(session, topics.state(device), DeviceState(device_id=device, online=False).to_json())


def test_filters_and_paging_run_in_the_store(sessions: sessionmaker[Session]) -> None:
    fleet(sessions)
    queries = Queries(sessions)
    everything = queries.devices(DeviceFilter(limit=500))
    assert everything.total == 30 and len(everything.items) == 30
    online = [d.id for d in everything.items if d.online]
    assert [d.id for d in everything.items] == online + sorted(d.id for d in everything.items if not d.online)
    page = queries.devices(DeviceFilter(offset=5, limit=7))
    assert page.total == 30 and [d.id for d in page.items] == [d.id for d in everything.items[5:12]]
    eu = queries.devices(DeviceFilter(group="eu", limit=500))
    assert eu.total == 15 and all(d.groups == ["eu"] for d in eu.items)
    assert queries.devices(DeviceFilter(group="e")).total == 0  # whole group names, not parts
    Operations(sessions, "test").tag(["fridge-01"], {}, add_groups=["beta"])  # assigned, not reported
    assert [d.id for d in queries.devices(DeviceFilter(group="beta")).items] == ["fridge-01"]
    assert queries.devices(DeviceFilter(group="us", online=False, limit=500)).total == 5  # 3, 9, 15, 21, 27
    assert queries.devices(DeviceFilter(board="rpi4", bundle=SHA_A[:6])).total == 5
    assert queries.devices(DeviceFilter(bundle=SHA_B.upper()[:3])).total == 20
    assert queries.devices(DeviceFilter(text="GE-2", limit=500)).total == 10  # case-insensitive
    assert queries.devices(DeviceFilter(text="%")).total == 0  # literal: no LIKE wildcard
    assert queries.devices(DeviceFilter(text="_0")).total == 0
    assert queries.devices(DeviceFilter(text="0.1")).total == 11  # agent versions 0.1, 0.10 .. 0.19
    detail = queries.device("fridge-04")
    assert detail.device.active is not None and detail.device.active["sha256"] == SHA_A
    with pytest.raises(NotFoundError):
        queries.device("nope")
    assert queries.online("fridge-0") == 6 and queries.online() == 20


def test_paged_records_and_the_audit_log(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    from cloud.monitor import raise_alert

    with sessions.begin() as session:
        for i in range(25):
            raise_alert(session, "gate_failed" if i % 5 == 0 else "drift", "bundle", f"b{i}", f"alert {i}", i)
    queries = Queries(sessions)
    latest = queries.alerts(Paging(limit=10))
    assert latest.total == 25 and [a.message for a in latest.items][:2] == ["alert 24", "alert 23"]
    assert queries.alerts(Paging(offset=20, limit=10)).items[-1].message == "alert 0"
    assert queries.alerts(kind="gate_failed").total == 5
    operator = Operations(sessions, "token:ops")
    added = operator.add_bundle(world["bundles"][5].tarball, world["trust"])  # type: ignore[index,arg-type]
    assert queries.bundles().items == [added]
    with pytest.raises(NotFoundError):
        operator.rollout("pause", "r-none")
    entries = queries.audit().items
    assert [(e.actor, e.action, e.result.split(":")[0]) for e in entries] == [
        ("token:ops", "rollout.pause", "refused"), ("token:ops", "bundle.add", "ok")]
    assert "no rollout 'r-none'" in entries[0].result


def state_then_old(sessions: sessionmaker[Session], device: str) -> None:
    with sessions.begin() as session:
        ingest(session, topics.state(device), DeviceState(device_id=device, online=True).to_json())
        session.execute(update(Device).where(Device.id == device).values(last_seen=OLD))


def window(device: str, seq: int) -> bytes:
    t = datetime.now(UTC)
    return Telemetry(device_id=device, seq=seq, window_start=t - timedelta(seconds=10), window_end=t,
                     inferences=3).to_json()


def test_last_seen_moves_when_a_batch_is_stored_message_by_message(
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with one message that fails in the store is stored one message at a time: the
    other devices' telemetry moves their "last seen" there too (it did only in the batch path)."""
    real = cloud.ingest._telemetry

    def poisoned(session: Session, telemetry: Telemetry, device: str | None) -> object:
        if telemetry.device_id == "fridge-p":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(session, telemetry, device)

    monkeypatch.setattr(cloud.ingest, "_telemetry", poisoned)
    for device in ("fridge-ok", "fridge-p"):
        state_then_old(sessions, device)

    class Transport:
        inbox: queue.Queue[object] = queue.Queue()

        def publish(self, topic: str, payload: bytes) -> int:
            return 1

    transport = Transport()
    transport.inbox.put(Received(topics.telemetry("fridge-ok"), window("fridge-ok", 1)))
    transport.inbox.put(Received(topics.telemetry("fridge-p"), window("fridge-p", 1)))
    worker = IngestWorker(transport, sessions)  # type: ignore[arg-type]
    assert worker.drain() == 2 and worker.counts["poison"] == 1
    seen = {d.id: d.last_seen for d in Queries(sessions).devices().items}
    assert seen["fridge-ok"] > OLD + timedelta(days=300), seen
    assert seen["fridge-p"] > OLD + timedelta(days=300), seen  # it did send: dead-lettered, but seen


def test_series_per_step_and_bundle_from_the_rollups(sessions: sessionmaker[Session], world: dict[str, object],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's time series: points per step and bundle, gaps where nothing came, drift
    against the bundle's own reference profile; the API serves the same points."""
    from cloud.fleet import add_bundle
    from cloud.queries import SeriesFilter
    from contract.common import LatencyStats

    with sessions.begin() as session:
        row = add_bundle(session, world["bundles"][5].tarball, world["trust"])  # type: ignore[index,arg-type]
        ref = BundleRef(model_name=row.model_name, model_version=row.model_version, target=row.target,
                        sequence=row.sequence, sha256=row.sha256)
        labels = list(row.manifest["reference"]["prediction_rates"])
    now = datetime.now(UTC)
    start = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) - timedelta(minutes=30)
    clock = [start]
    monkeypatch.setattr(cloud.ingest, "now", lambda: clock[0])
    for minute, latency in ((0, 4.0), (1, 8.0), (20, 6.0)):  # nothing from minute 2 to 19
        clock[0] = start + timedelta(minutes=minute, seconds=10)
        with sessions.begin() as session:
            t = clock[0]
            window = Telemetry(device_id="fridge-s", seq=minute + 1, window_start=t - timedelta(seconds=10),
                               window_end=t, bundle=ref, inferences=90, errors={"E": 10},
                               predictions={labels[0]: 90}, latency_ms=LatencyStats(p50=1, p95=latency, p99=9,
                                                                                    mean=1, max=9))
            ingest(session, topics.state("fridge-s"), DeviceState(device_id="fridge-s", online=True).to_json())
            ingest(session, topics.telemetry("fridge-s"), window.to_json())
    queries = Queries(sessions, clock=lambda: start + timedelta(minutes=30))
    points = queries.series(SeriesFilter(device="fridge-s"), minutes=31, step_minutes=5)
    assert [(p.at - start, p.windows, p.inferences) for p in points] == [
        (timedelta(0), 2, 180), (timedelta(minutes=20), 1, 90)]  # minutes 0 and 1 in one step, then a gap
    assert points[0].error_rate == pytest.approx(0.1) and points[0].latency_p95_ms == pytest.approx(6.0)
    assert points[0].bundle == ref.sha256 and points[0].prediction_drift_js is not None
    assert points[0].prediction_drift_js > 0.1  # one label only, against the reference's spread
    assert queries.series(SeriesFilter(bundle=ref.sha256), minutes=31, step_minutes=5) == points
    assert queries.series(SeriesFilter(device="nobody"), minutes=31) == []

    from fastapi.testclient import TestClient

    from cloud.api import create_app
    from cloud.tokens import create

    client = TestClient(create_app(sessions))
    auth = {"Authorization": f"Bearer {create(sessions, 'r', 'read', 'test')}"}
    served = client.get("/devices/fridge-s/series", params={"minutes": 60 * 24, "step": 5}, headers=auth)
    assert served.status_code == 200 and len(served.json()) == 2, served.text
    assert client.get("/devices/nobody/series", headers=auth).status_code == 404
    assert client.get(f"/bundles/{ref.sha256[:8]}/series", headers=auth).status_code == 200
