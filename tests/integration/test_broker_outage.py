"""The broker stops for a while and comes back: every telemetry window the agent produced in the
meantime reaches the cloud's store exactly once, and the spool empties only as the cloud acks."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from agent.spool import Spool
from cloud.broker import free_port
from cloud.ingest import IngestWorker
from cloud.store import TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.state import offline
from examples.fridge.synth import write_dataset
from tests.integration import mosquitto
from tests.waiting import until
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


def test_outage_loses_no_window(tmp_path: Path, world: dict[str, object]) -> None:
    mosquitto.binary()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # persistence keeps the cloud's session (and its subscription) across the restart
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n"
                    f"persistence_location {tmp_path}/\nautosave_interval 1\n")
    broker = mosquitto.start(conf, port)
    url = f"mqtt://127.0.0.1:{port}"
    device = "fridge-outage"
    write_dataset(tmp_path / "frames", 4, seed=2)
    root: Path = world["root"]  # type: ignore[assignment]
    config = AgentConfig(device_id=device, data_dir=tmp_path / "data", trusted_keys=[root / "keys" / "ops.pub"],
                         inference_interval_s=0.1, telemetry_window_s=1,
                         broker=BrokerConfig(url=url, protocol="5", reconnect_min_s=1, reconnect_max_s=2))
    agent = Agent(config, MqttTransport(device, config.broker, topics.state(device), offline(device).to_json()),
                  FolderSource(tmp_path / "frames"))
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    cloud = IngestWorker(MqttTransport("cloud", BrokerConfig(url=url, protocol="5", reconnect_min_s=1,
                                                             reconnect_max_s=2), manual_ack=True), sessions)
    stop = threading.Event()
    threads = [threading.Thread(target=cloud.run, args=(stop,), daemon=True),
               threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)]
    threads[0].start()
    assert cloud.subscribed.wait(30), "the cloud did not subscribe"
    threads[1].start()

    def stored() -> Counter[int]:
        with sessions() as session:
            return Counter(session.scalars(select(TelemetryRow.seq).where(TelemetryRow.device_id == device)).all())

    try:
        until(lambda: len(stored()) >= 2, "the first windows to be stored")
        broker.terminate()  # the outage: windows keep being produced and spooled
        broker.wait(timeout=10)
        until(lambda: agent.spool.size >= 2, "windows to wait in the spool during the outage")
        broker = mosquitto.start(conf, port)
        until(lambda: agent.spool.size == 0, "the spool to drain after the outage (the cloud acked everything)")
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        broker.terminate()
        broker.wait(timeout=10)
    spool = Spool(tmp_path / "data" / "telemetry.db", 1000)  # the stopped agent's, read back
    produced, waiting = spool.last_seq, spool.pending()
    spool.close()
    rows = stored()
    # every window left the spool only once stored: 1..n are in the store, once each, no gap
    assert len(rows) >= 4 and max(rows.values()) == 1
    assert set(range(1, produced + 1)) - {p.seq for p in waiting} == set(rows)
