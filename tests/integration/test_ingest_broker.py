"""Ingestion through Mosquitto (MQTT v5): a persistent session keeps what devices publish while
ingestion is down; redeliveries are stored once; malformed payloads land in dead letters; two
workers share the load through a shared subscription."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.ingest import IngestWorker
from cloud.store import DeadLetter, TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.telemetry import Telemetry
from tests.integration.cloud_side import cloud_client
from tests.waiting import until
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 26, tzinfo=UTC)


def window(device: str, seq: int) -> bytes:
    return Telemetry(device_id=device, seq=seq, window_start=T0 + timedelta(seconds=seq),
                     window_end=T0 + timedelta(seconds=seq + 1), inferences=5).to_json()


@contextmanager
def worker(url: str, sessions: sessionmaker[Session], client_id: str,
           share: str | None = None) -> Iterator[IngestWorker]:
    transport = MqttTransport(client_id, BrokerConfig(url=url, protocol="5"), manual_ack=True)
    w = IngestWorker(transport, sessions, share_group=share)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    thread.start()
    assert w.connected.wait(30), "the ingestion worker did not connect"
    assert w.subscribed.wait(30), "the broker did not confirm the ingestion worker's subscriptions"
    try:
        yield w
    finally:
        stop.set()
        thread.join(timeout=10)


def stored(sessions: sessionmaker[Session], table: type = TelemetryRow) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def settle(sessions: sessionmaker[Session], expected: int, table: type = TelemetryRow, timeout: float = 60) -> int:
    """Wait until ``expected`` rows are stored, then return the count (more would be a duplicate)."""
    until(lambda: stored(sessions, table) >= expected, f"{expected} rows in {table.__name__}", timeout,
          detail=lambda: f"{stored(sessions, table)} stored")
    return stored(sessions, table)


def drained(url: str, sessions: sessionmaker[Session], timeout: float = 60) -> None:
    """Proof that nothing more is on its way to a single worker: a marker window published now is
    delivered after everything queued before it (MQTT keeps order), so once it is stored, so is
    all that came before."""
    device = cloud_client(url, True, queue.Queue())
    device.publish(topics.telemetry("marker"), window("marker", 1), qos=1).wait_for_publish(5)
    device.disconnect()
    until(lambda: of_device(sessions, "marker") > 0, "the marker window to be stored", timeout)


def of_device(sessions: sessionmaker[Session], device: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(TelemetryRow)
                                  .where(TelemetryRow.device_id == device)) or 0)


def test_nothing_valid_lost_while_ingestion_is_down(mosquitto_url: str, tmp_path: Path) -> None:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    with worker(mosquitto_url, sessions, "ingest-restart"):
        pass  # first connection creates the persistent session and its subscriptions; then ingestion stops
    device = cloud_client(mosquitto_url, True, queue.Queue())
    for seq in range(1, 51):
        device.publish(topics.telemetry("fridge-1"), window("fridge-1", seq), qos=1).wait_for_publish(5)
    for seq in (10, 20, 30):  # redeliveries
        device.publish(topics.telemetry("fridge-1"), window("fridge-1", seq), qos=1).wait_for_publish(5)
    device.publish(topics.telemetry("fridge-1"), b'{"schema_version": 1, "seq": -1}', qos=1).wait_for_publish(5)
    device.publish(topics.events("fridge-1"), b"\xff\xfe not json", qos=1).wait_for_publish(5)
    device.disconnect()
    assert stored(sessions) == 0
    with worker(mosquitto_url, sessions, "ingest-restart") as w:  # same client id: the session resumes
        assert settle(sessions, 50) >= 50
        drained(mosquitto_url, sessions)  # everything queued before the marker is handled
        assert of_device(sessions, "fridge-1") == 50
        assert stored(sessions, DeadLetter) == 2
        assert w.counts["duplicate"] == 3
    with sessions() as session:
        seqs = session.scalars(select(TelemetryRow.seq).where(TelemetryRow.device_id == "fridge-1")).all()
        assert sorted(seqs) == list(range(1, 51))
        reasons = session.scalars(select(DeadLetter.reason)).all()
        assert any("seq" in r for r in reasons) and any("not valid UTF-8" in r for r in reasons)


def test_two_workers_share_the_load(mosquitto_url: str, tmp_path: Path) -> None:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    with worker(mosquitto_url, sessions, "ingest-a", "ingest") as a, \
            worker(mosquitto_url, sessions, "ingest-b", "ingest") as b:
        device = cloud_client(mosquitto_url, True, queue.Queue())
        for seq in range(1, 201):
            device.publish(topics.telemetry(f"fridge-{seq % 4}"), window(f"fridge-{seq % 4}", seq), qos=1)
        assert settle(sessions, 200) == 200
        device.disconnect()
        # each worker took a share (the counts also include retained device states other tests left)
        assert a.counts["stored"] >= 40 and b.counts["stored"] >= 40
        assert a.counts["duplicate"] + b.counts["duplicate"] == 0
