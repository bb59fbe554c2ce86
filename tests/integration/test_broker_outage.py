"""The broker stops for a while and comes back: every telemetry window the agent produced in the
meantime reaches the receiver, and de-duplicating by ``seq`` leaves each exactly once."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from agent.spool import Spool
from cloud.broker import free_port
from contract import topics
from contract.state import offline
from contract.telemetry import Telemetry
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
    seqs: list[int] = []

    def received() -> list[int]:
        while not inbox.empty():
            seqs.append(Telemetry.from_json(inbox.get_nowait()[1]).seq)
        return seqs

    try:
        until(lambda: len(received()) >= 2, "the first windows to reach the receiver")
        broker.terminate()  # the outage: windows keep being produced and spooled
        broker.wait(timeout=10)
        until(lambda: agent.spool.size >= 2, "windows to wait in the spool during the outage")
        broker = mosquitto.start(conf, port)
        until(lambda: agent.spool.size == 0, "the spool to drain after the outage")
        stop.set()
        thread.join(timeout=30)
        spool = Spool(tmp_path / "data" / "telemetry.db", 1000)  # the stopped agent's, read back
        produced = spool.next_seq() - 1
        waiting = {p.seq for p in spool.pending()}
        spool.close()
        delivered = set(range(1, produced + 1)) - waiting  # what the broker acknowledged
        # the receiver reconnects and gets its queue: every acknowledged window, positively
        until(lambda: delivered <= set(received()), f"windows {sorted(delivered - set(seqs))} to arrive")
    finally:
        stop.set()
        receiver.loop_stop()
        receiver.disconnect()
        broker.terminate()
        broker.wait(timeout=10)
    # no gap: what left the spool is 1..n, and only windows closed after it (at the stop) may wait
    assert len(delivered) >= 4 and delivered == set(range(1, max(delivered) + 1))
    assert all(seq > max(delivered) for seq in waiting), f"a gap: windows {sorted(waiting)} still wait"
    assert set(seqs) <= set(range(1, produced + 1))
