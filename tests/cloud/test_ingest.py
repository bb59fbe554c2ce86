"""Ingestion on SQLite and PostgreSQL: devices from their state, telemetry once per (device, seq),
events once per payload, rollout jobs moved forward only, malformed payloads in dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.ingest import ingest
from cloud.store import (
    BundleRow,
    DeadLetter,
    Device,
    EventRow,
    Rollout,
    RolloutDevice,
    TelemetryRow,
    open_store,
    sqlite_url,
)
from contract import topics
from contract.common import BundleRef, LatencyStats
from contract.events import JobEvent
from contract.jobs import JobState
from contract.state import DeviceState, offline
from contract.telemetry import Telemetry
from contract.transfer import MissingChunks

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
REF = BundleRef(model_name="fridge", model_version="1", target="t", sequence=3, sha256="a" * 64)


def window(device: str, seq: int, inferences: int = 10) -> bytes:
    return Telemetry(device_id=device, seq=seq, window_start=T0 + timedelta(seconds=seq),
                     window_end=T0 + timedelta(seconds=seq + 1), bundle=REF, inferences=inferences,
                     errors={"RuntimeError": 1}, predictions={"apple": 4},
                     latency_ms=LatencyStats(p50=1, p95=2, p99=3, mean=1.2, max=4)).to_json()


def count(sessions: sessionmaker[Session], table: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_state_creates_device_and_last_will_keeps_what_it_said(sessions: sessionmaker[Session]) -> None:
    state = DeviceState(device_id="d1", online=True, board="rpi4", groups=["eu"], active=REF)
    with sessions.begin() as session:
        assert ingest(session, topics.state("d1"), state.to_json()).kind == "stored"
        assert ingest(session, topics.state("d1"), offline("d1").to_json()).kind == "stored"
    with sessions() as session:
        device = session.get(Device, "d1")
        assert device is not None and not device.online
        assert device.board == "rpi4" and device.reported_groups == ["eu"] and device.active_sha256 == "a" * 64
        assert device.last_seen.tzinfo is not None


def test_a_state_older_than_the_one_applied_does_not_move_the_device_back(sessions: sessionmaker[Session]) -> None:
    """A device's states may arrive out of order (a copy held across a reconnect, a re-delivery):
    the newest by the device's ``ts`` wins; the last will (made at connect, so older) still applies
    (found by the partition row of the fault harness: the cloud believed a rolled-back device still
    ran the new bundle)."""
    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    new = BundleRef(model_name="fridge", model_version="1", target="pi4", sequence=6, sha256="6" * 64)
    old = new.model_copy(update={"sequence": 5, "sha256": "5" * 64})
    will = offline("d1").model_copy(update={"ts": t0})
    rolled_back = DeviceState(device_id="d1", online=True, active=old, ts=t0 + timedelta(seconds=20))
    stale = DeviceState(device_id="d1", online=True, active=new, ts=t0 + timedelta(seconds=10))
    with sessions.begin() as session:
        assert ingest(session, topics.state("d1"), rolled_back.to_json()).kind == "stored"
        ingest(session, topics.state("d1"), stale.to_json())
    with sessions() as session:
        device = session.get(Device, "d1")
        assert device is not None and device.active_sha256 == old.sha256 and device.online
    with sessions.begin() as session:
        ingest(session, topics.state("d1"), will.to_json())
    with sessions() as session:
        device = session.get(Device, "d1")
        assert device is not None and not device.online and device.active_sha256 == old.sha256


def test_redelivered_telemetry_is_stored_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        kinds = [ingest(session, topics.telemetry("d1"), window("d1", s)).kind for s in (1, 2, 1, 2, 3)]
    assert kinds == ["stored", "stored", "duplicate", "duplicate", "stored"]
    with sessions.begin() as session:  # and in a later transaction too
        assert ingest(session, topics.telemetry("d1"), window("d1", 3)).kind == "duplicate"
        assert ingest(session, topics.telemetry("d2"), window("d2", 3)).kind == "stored"
    assert count(sessions, TelemetryRow) == 4
    with sessions() as session:
        row = session.scalars(select(TelemetryRow).where(TelemetryRow.seq == 1)).one()
        assert row.errors == 1 and row.latency_p95 == 2 and row.bundle_sha256 == "a" * 64


def test_malformed_payloads_go_to_dead_letters_with_reason(sessions: sessionmaker[Session]) -> None:
    bad = [
        (topics.telemetry("d1"), b"{not json"),
        (topics.telemetry("d1"), b'{"schema_version": 1, "device_id": "d1"}'),
        (topics.telemetry("d1"), window("someone-else", 1)),
        (topics.events("d1"), b'{"schema_version": 1, "type": "bogus", "device_id": "d1"}'),
        ("coldchain/v1/devices/d1/whatever", b"{}"),
        (topics.state("d1"), b'{"schema_version": 99, "device_id": "d1", "online": true}'),
    ]
    with sessions.begin() as session:
        outcomes = [ingest(session, t, p) for t, p in bad]
    assert [o.kind for o in outcomes] == ["dead"] * len(bad)
    with sessions() as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
        assert len(letters) == len(bad)
        assert "does not match the topic" in letters[2].reason
        assert "seq" in letters[1].reason  # names the missing field
        assert letters[0].payload == b"{not json"
        assert all(letter.reason for letter in letters)
    assert count(sessions, TelemetryRow) == 0


def test_events_dedupe_and_move_rollout_jobs_forward_only(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.add(BundleRow(sha256="b" * 64, model_name="m", model_version="1", target="t", sequence=1,
                              tarball="/x", artifact_sha256="c" * 64, size=1, manifest={}))
        session.flush()
        session.add(Rollout(id="r1", bundle_sha256="b" * 64, plan={}, status="RUNNING"))
        session.flush()
        session.add(RolloutDevice(rollout_id="r1", device_id="d1", wave=0, job_id="r1.d1"))

    def event(state: JobState, seq: int) -> bytes:
        return JobEvent(device_id="d1", seq=seq, job_id="r1.d1", state=state, ts=T0 + timedelta(seconds=seq),
                        reason="why" if state is JobState.ROLLED_BACK else None).to_json()

    sequence = [event(JobState.QUEUED, 1), event(JobState.DOWNLOADING, 2), event(JobState.PROBATION, 4),
                event(JobState.VERIFYING, 3), event(JobState.PROBATION, 4)]
    with sessions.begin() as session:
        kinds = [ingest(session, topics.events("d1"), p).kind for p in sequence]
    assert kinds == ["stored"] * 4 + ["duplicate"]
    with sessions() as session:
        row = session.get(RolloutDevice, ("r1", "d1"))
        assert row is not None and row.state == "PROBATION" and row.activated  # VERIFYING came late: ignored
    with sessions.begin() as session:
        ingest(session, topics.events("d1"), event(JobState.SUCCEEDED, 5))
        ingest(session, topics.events("d1"), event(JobState.ROLLED_BACK, 6))
    with sessions() as session:
        row = session.get(RolloutDevice, ("r1", "d1"))
        assert row is not None and row.state == "ROLLED_BACK" and row.reason == "why"
        assert session.get(Device, "d1") is None or True
    assert count(sessions, EventRow) == 6


def test_missing_report_is_handed_back_not_stored(sessions: sessionmaker[Session]) -> None:
    report = MissingChunks.from_indices("d1", "e" * 64, 10, [1, 2, 7])
    with sessions.begin() as session:
        outcome = ingest(session, topics.missing("d1", "e" * 64), report.to_json())
        liar = ingest(session, topics.missing("d2", "e" * 64), report.to_json())
    assert outcome.kind == "missing" and outcome.missing is not None and outcome.missing.indices() == [1, 2, 7]
    assert liar.kind == "dead"


def test_numbers_beyond_what_the_store_holds_are_dead_letters(sessions: sessionmaker[Session]) -> None:
    """seq >= 2**63 (or inferences = 2**70) raised OverflowError in the store and killed the cloud."""
    import json

    for field, value in (("seq", 2**63), ("inferences", 2**70)):
        payload = json.loads(window("fridge-9", 1))
        payload[field] = value
        with sessions.begin() as session:
            outcome = ingest(session, topics.telemetry("fridge-9"), json.dumps(payload).encode())
        assert outcome.kind == "dead" and field in (outcome.reason or "")
    assert count(sessions, DeadLetter) == 2 and count(sessions, TelemetryRow) == 0


def test_a_message_that_fails_in_the_store_is_dead_lettered_and_the_batch_goes_on(
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever still gets through validation and fails while storing is that message's dead
    letter (with the reason), acknowledged with the batch, never handed back for ever."""
    import queue as queue_module

    import cloud.ingest
    from cloud.ingest import IngestWorker
    from transport.client import Received

    real = cloud.ingest._telemetry

    def poisoned(session: Session, telemetry: Telemetry, device: str | None) -> object:
        if telemetry.seq == 2:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(session, telemetry, device)

    monkeypatch.setattr(cloud.ingest, "_telemetry", poisoned)

    class Transport:
        inbox: queue_module.Queue[object] = queue_module.Queue()
        acked: list[int] = []

        def ack(self, mid: int, qos: int) -> None:
            self.acked.append(mid)

        def publish(self, topic: str, payload: bytes) -> int:  # the devices' telemetry acks
            return 1

    transport = Transport()
    for seq in (1, 2, 3):
        transport.inbox.put(Received(topics.telemetry("fridge-8"), window("fridge-8", seq), mid=seq, qos=1))
    worker = IngestWorker(transport, sessions)  # type: ignore[arg-type]
    assert worker.drain() == 3
    assert worker.counts["stored"] == 2 and worker.counts["dead"] == 1 and worker.counts["poison"] == 1
    assert sorted(transport.acked) == [1, 2, 3]  # the poison one too: the broker will not hand it back
    with sessions() as session:
        (reason,) = session.scalars(select(DeadLetter.reason)).all()
    assert reason.startswith("OverflowError while storing")


def test_last_seen_moves_with_every_message_not_only_state(sessions: sessionmaker[Session]) -> None:
    """Devices sending telemetry every 10 s showed "5 min ago" in `fleet list`."""
    with sessions.begin() as session:
        ingest(session, topics.state("fridge-ls"), DeviceState(device_id="fridge-ls", online=True).to_json())
        session.execute(update(Device).where(Device.id == "fridge-ls").values(
            last_seen=datetime(2026, 1, 1, tzinfo=UTC)))
    import queue as queue_module

    from cloud.ingest import IngestWorker
    from transport.client import Received

    class Transport:
        inbox: queue_module.Queue[object] = queue_module.Queue()

        def publish(self, topic: str, payload: bytes) -> int:  # the devices' telemetry acks
            return 1

    transport = Transport()
    transport.inbox.put(Received(topics.telemetry("fridge-ls"), window("fridge-ls", 1)))
    assert IngestWorker(transport, sessions).drain() == 1  # type: ignore[arg-type]
    with sessions() as session:
        seen = session.get(Device, "fridge-ls").last_seen  # type: ignore[union-attr]
    assert seen.replace(tzinfo=UTC) > datetime(2026, 11, 1, tzinfo=UTC)


def test_error_counts_whose_sum_passes_the_store_limit_are_stored(sessions: sessionmaker[Session]) -> None:
    """Found by the poison row: each error count is bounded, but 600 of them at 2**63 - 1 summed
    past what the column holds, and a schema-valid window became a dead letter."""
    import json

    from contract.base import MAX_INT

    payload = json.loads(window("fridge-sum", 1))
    payload["errors"] = {f"e{i}": MAX_INT for i in range(600)}
    with sessions.begin() as session:
        assert ingest(session, topics.telemetry("fridge-sum"), json.dumps(payload).encode()).kind == "stored"
    with sessions() as session:
        assert session.scalars(select(TelemetryRow.errors)).one() == MAX_INT


def test_a_store_from_before_state_ordering_gets_the_column(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    engine = open_store(url).kw["bind"]
    with engine.begin() as db:
        db.exec_driver_sql("ALTER TABLE devices DROP COLUMN state_ts")
    engine.dispose()
    sessions = open_store(url)
    with sessions.begin() as session:
        assert ingest(session, topics.state("d1"), DeviceState(device_id="d1", online=True).to_json()).kind == "stored"
    with sessions() as session:
        device = session.get(Device, "d1")
        assert device is not None and device.state_ts is not None
