"""The broker stops for a while and comes back: every telemetry window the agent produced in the
meantime reaches the receiver, and de-duplicating by ``seq`` leaves each exactly once."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from agent.config import AgentConfig, BrokerConfig
from agent.frames import FolderSource
from agent.loop import Agent
from agent.mqtt import MqttTransport
from cloud.broker import free_port
from contract import topics
from contract.state import offline
from contract.telemetry import Telemetry
from examples.fridge.synth import write_dataset
from tests.integration import mosquitto

pytestmark = pytest.mark.integration


def _collect(inbox: queue.Queue[tuple[str, bytes]], quiet_s: float, limit_s: float) -> list[int]:
    seqs: list[int] = []
    last = time.monotonic()
    deadline = last + limit_s
    while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
        try:
            seqs.append(Telemetry.from_json(inbox.get(timeout=0.2)[1]).seq)
            last = time.monotonic()
        except queue.Empty:
            pass
    return seqs


def test_outage_loses_no_window(tmp_path: Path, world: dict[str, object]) -> None:
    mosquitto.binary()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # persistence keeps the receiver's session (and its subscription) across the restart
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
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    receiver = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="receiver", protocol=mqtt.MQTTv5)
    receiver.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    receiver.reconnect_delay_set(1, 1)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    receiver.connect("127.0.0.1", port, clean_start=False, properties=properties)
    receiver.subscribe(topics.telemetry(device), 1)
    receiver.loop_start()
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        time.sleep(3.5)
        broker.terminate()  # the outage: windows keep being produced and spooled
        broker.wait(timeout=10)
        time.sleep(4)
        assert agent.spool.size >= 2, "windows produced during the outage should wait in the spool"
        broker = mosquitto.start(conf, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and agent.spool.size > 0:
            time.sleep(0.2)
        assert agent.spool.size <= 1  # at most the window closed this instant
        stop.set()
        thread.join(timeout=10)
        seqs = _collect(inbox, quiet_s=3.0, limit_s=20.0)  # the receiver reconnects and gets its queue
    finally:
        stop.set()
        receiver.loop_stop()
        receiver.disconnect()
        broker.terminate()
        broker.wait(timeout=10)
    unique = sorted(set(seqs))
    assert len(unique) >= 8
    assert unique == list(range(unique[0], unique[-1] + 1)), f"windows missing: {unique}"
    assert unique[0] == 1
