"""A telemetry burst through Mosquitto with its stock limits (1,000 queued messages per client):
50 real agents, each with 60 windows in its spool, into the real ingestion worker. Every
window must be stored exactly once and every spool must empty. When the agent deleted a window on
the broker's PUBACK, the broker's overflow ("Outgoing messages are being dropped") lost windows."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.config import AgentConfig
from agent.loop import Agent
from cloud.broker import free_port
from cloud.ingest import IngestWorker
from cloud.store import TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.signing import write_keypair
from contract.state import offline
from tests.integration import mosquitto
from tests.waiting import until
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
DEVICES, WINDOWS = 50, 60  # 3,000 windows at once: more than the broker queues for one client (1,000)


def test_a_burst_on_stock_broker_settings_is_stored_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")  # stock: no queue settings
    url = f"mqtt://127.0.0.1:{port}"
    keys = write_keypair(tmp_path / "keys", "ops")
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with mosquitto.running(conf, port):
        worker = IngestWorker(MqttTransport("cloud", BrokerConfig(url=url, protocol="5"), manual_ack=True), sessions)
        threads.append(threading.Thread(target=worker.run, args=(stop,), daemon=True))
        threads[0].start()
        assert worker.subscribed.wait(30), "the ingestion worker did not subscribe"
        agents = []
        for number in range(DEVICES):
            device = f"fridge-burst-{number}"
            config = AgentConfig(device_id=device, data_dir=tmp_path / device, trusted_keys=[keys.public],
                                 telemetry_window_s=86400, broker=BrokerConfig(url=url, protocol="5"))
            agent = Agent(config, MqttTransport(device, config.broker, topics.state(device),
                                                offline(device).to_json()), None)
            for _ in range(WINDOWS):  # the burst: closed while the device was offline
                agent.close_window()
            agents.append(agent)
        for agent in agents:
            threads.append(threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True))
            threads[-1].start()
        try:
            until(lambda: all(a.spool.size == 0 for a in agents), "every spool to empty (all windows acked)", 240,
                  detail=lambda: f"{sum(a.spool.size for a in agents)} windows still in the spools")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    with sessions() as session:
        stored = Counter(session.execute(select(TelemetryRow.device_id, TelemetryRow.seq)).all())
    expected = {(f"fridge-burst-{n}", seq) for n in range(DEVICES) for seq in range(1, WINDOWS + 1)}
    assert set(stored) == expected, f"{len(expected - set(stored))} windows lost"
    assert max(stored.values()) == 1
