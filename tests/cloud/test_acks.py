"""End-to-end telemetry acks on the cloud side: windows are stored once per (device, spool epoch,
seq); after a batch commits, each device gets one ack covering its windows of the batch,
duplicates included; drops a device reports are kept per device and epoch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.faults.device import MemoryTransport
from cloud.ingest import IngestWorker, dropped_windows, ingest
from cloud.store import TelemetryRow
from contract import topics
from contract.acks import TelemetryAck
from contract.telemetry import SpoolStats, Telemetry
from transport.client import Received

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def window(device: str, seq: int, epoch: str | None = "e1", evicted: int = 0, inferences: int = 3) -> bytes:
    return Telemetry(device_id=device, seq=seq, epoch=epoch, window_start=T0 + timedelta(seconds=seq),
                     window_end=T0 + timedelta(seconds=seq + 1), inferences=inferences,
                     spool=SpoolStats(evicted=evicted)).to_json()


def rows(sessions: sessionmaker[Session], device: str) -> list[tuple[str, int]]:
    with sessions() as session:
        found = session.execute(select(TelemetryRow.epoch, TelemetryRow.seq).where(TelemetryRow.device_id == device)
                                .order_by(TelemetryRow.epoch, TelemetryRow.seq)).all()
    return [(e, s) for e, s in found]


def test_windows_are_unique_per_device_epoch_and_seq(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        kinds = [ingest(session, topics.telemetry("d1"), window("d1", seq, epoch)).kind
                 for seq, epoch in [(1, "e1"), (2, "e1"), (1, "e2"), (1, "e1"), (1, None), (1, None)]]
    assert kinds == ["stored", "stored", "stored", "duplicate", "stored", "duplicate"]
    assert rows(sessions, "d1") == [("", 1), ("e1", 1), ("e1", 2), ("e2", 1)]  # "": agents before epochs


def acks_of(transport: MemoryTransport, device: str) -> list[TelemetryAck]:
    return [TelemetryAck.from_json(p) for p in transport.on(topics.acks(device))]


def test_each_device_gets_one_ack_after_the_commit_duplicates_included(sessions: sessionmaker[Session]) -> None:
    class Checking(MemoryTransport):
        """Reads the store from another session at every publish: the rows must already be committed."""

        committed_at_publish: list[int] = []

        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
            with sessions() as session:
                self.committed_at_publish.append(int(session.scalar(select(func.count()).select_from(TelemetryRow))
                                                     or 0))
            return super().publish(topic, payload, qos, retain)

    transport = Checking()
    with sessions.begin() as session:  # stored before: a re-send after a lost ack
        ingest(session, topics.telemetry("d1"), window("d1", 2))
    for device, seq in [("d1", 1), ("d1", 2), ("d2", 7), ("d1", 3), ("d1", 5), ("d2", 8)]:
        transport.inbox.put(Received(topics.telemetry(device), window(device, seq), mid=seq, qos=1))
    transport.inbox.put(Received(topics.telemetry("d1"), b'{"schema_version": 1, "seq": 4}', mid=9, qos=1))
    worker = IngestWorker(transport, sessions)
    assert worker.drain() == 7
    assert worker.counts["stored"] == 5 and worker.counts["duplicate"] == 1 and worker.counts["dead"] == 1
    (d1,) = acks_of(transport, "d1")
    assert (d1.epoch, d1.ranges) == ("e1", [(1, 3), (5, 5)])  # 2 was a duplicate: acked again; 4 is dead
    (d2,) = acks_of(transport, "d2")
    assert d2.ranges == [(7, 8)]
    assert transport.committed_at_publish == [6, 6]  # every window of the batch was committed before any ack
    assert worker.counts["acks"] == 2


def test_acks_are_per_epoch_and_for_windows_without_one(sessions: sessionmaker[Session]) -> None:
    transport = MemoryTransport()
    for seq, epoch in [(1, "e1"), (1, "e2"), (2, None)]:
        transport.inbox.put(Received(topics.telemetry("d1"), window("d1", seq, epoch)))
    IngestWorker(transport, sessions).drain()
    assert sorted((a.epoch or "", a.ranges[0]) for a in acks_of(transport, "d1")) == [
        ("", (2, 2)), ("e1", (1, 1)), ("e2", (1, 1))]


def test_nothing_is_acked_when_the_store_fails(sessions: sessionmaker[Session]) -> None:
    import pytest

    transport = MemoryTransport()
    transport.inbox.put(Received(topics.telemetry("d1"), window("d1", 1)))
    worker = IngestWorker(transport, sessions)

    def broken(*_: object) -> list[object]:
        raise RuntimeError("the store went away")

    worker._store = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        worker.drain()
    assert transport.on(topics.acks("d1")) == []


def test_dropped_windows_are_kept_per_device_and_epoch(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for seq, epoch, evicted in [(1, "e1", 0), (5, "e1", 4), (3, "e1", 2), (1, "e2", 3), (9, "e1", 4)]:
            ingest(session, topics.telemetry("d1"), window("d1", seq, epoch, evicted))
        ingest(session, topics.telemetry("d2"), window("d2", 1))
    with sessions() as session:  # a running total per epoch (out of order: its highest), summed over epochs
        assert dropped_windows(session, ["d1", "d2", "d3"]) == {"d1": 7}


def test_legacy_payload_is_acked_without_an_epoch(sessions: sessionmaker[Session]) -> None:
    transport = MemoryTransport()
    old = json.loads(window("d1", 4, None))
    del old["epoch"]
    transport.inbox.put(Received(topics.telemetry("d1"), json.dumps(old).encode()))
    IngestWorker(transport, sessions).drain()
    (ack,) = acks_of(transport, "d1")
    assert ack.epoch is None and ack.ranges == [(4, 4)]


def test_a_store_from_before_epochs_is_brought_up_to_date(sessions: sessionmaker[Session]) -> None:
    """Its (device, seq) key would take a rebuilt spool's windows for duplicates: acked, never stored."""
    from sqlalchemy import JSON as Json
    from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, String, Table, UniqueConstraint

    from cloud.store import open_store

    engine = sessions.kw["bind"]
    TelemetryRow.__table__.drop(engine)
    old = Table("telemetry", MetaData(), Column("id", Integer, primary_key=True),
                Column("device_id", String(64), index=True), Column("seq", BigInteger),
                Column("bundle_sha256", String(64), index=True), Column("window_start", DateTime(timezone=True)),
                Column("window_end", DateTime(timezone=True)), Column("inferences", Integer),
                Column("errors", Integer), Column("latency_p95", Float), Column("payload", Json),
                Column("received_at", DateTime(timezone=True), index=True),
                UniqueConstraint("device_id", "seq", name="uq_telemetry_device_seq"))
    old.create(engine)
    with engine.begin() as db:
        db.execute(old.insert().values(device_id="d1", seq=1, window_start=T0, window_end=T0, inferences=1,
                                       errors=0, payload={}, received_at=T0))
    again = open_store(engine.url.render_as_string(hide_password=False))
    with again.begin() as session:
        assert ingest(session, topics.telemetry("d1"), window("d1", 1, "e9")).kind == "stored"
    assert rows(again, "d1") == [("", 1), ("e9", 1)]
    from sqlalchemy import inspect

    kinds = {c["name"]: str(c["type"]) for c in inspect(again.kw["bind"]).get_columns("telemetry")}
    if again.kw["bind"].dialect.name == "postgresql":  # 32-bit there: a count past 2**31 would not be stored
        assert kinds["inferences"] == kinds["errors"] == "BIGINT", kinds
    with again.begin() as session:
        assert ingest(session, topics.telemetry("d1"), window("d1", 2, "e9", inferences=2**40)).kind == "stored"
    again.kw["bind"].dispose()


def test_fleet_show_tells_the_operator_what_a_device_dropped(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cloud.store import open_store, sqlite_url
    from coldchain.cli import app
    from contract.state import DeviceState

    url = sqlite_url(tmp_path / "cloud.db")
    with open_store(url).begin() as session:
        ingest(session, topics.state("d1"), DeviceState(device_id="d1", online=True).to_json())
        ingest(session, topics.telemetry("d1"), window("d1", 9, "e1", evicted=12))
    result = CliRunner().invoke(app, ["fleet", "show", "d1", "--db", url])
    assert result.exit_code == 0, result.output
    assert "dropped on the device unsent (its spool was full): 12" in " ".join(result.output.split())


def test_the_generated_mosquitto_configuration_sets_the_limits_that_drop_messages(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from benchmarks.faults.broker import mosquitto_binary, start_mosquitto
    from cloud.broker import free_port
    from coldchain.cli import app

    port = free_port()
    result = CliRunner().invoke(app, ["broker", "config", "mosquitto", "--fleet", str(tmp_path / "keys"), "--out",
                                      str(tmp_path / "mq"), "--port", str(port), "--persistence-dir", f"{tmp_path}/"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "mq" / "mosquitto.conf").read_text()
    settings = dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(settings["max_queued_messages"]) >= 100_000 and int(settings["max_inflight_messages"]) > 20
    assert settings["persistence"] == "true" and settings["persistent_client_expiration"] == "7d"
    if mosquitto_binary() is not None:  # Mosquitto itself accepts it: it starts and listens
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(text + "user root\n")
        process = start_mosquitto(conf, port)
        process.terminate()
        process.wait(timeout=10)
