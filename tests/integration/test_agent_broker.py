"""A bundle compiled from the demo model reaches an agent through a real broker, in chunks, is
verified, self-tested and activated; the agent infers on generated photos and the telemetry a
subscriber receives validates against the contract."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.world import signed
from cloud.broker import EmbeddedBroker
from contract import topics
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.state import DeviceState, offline
from contract.telemetry import Telemetry
from examples.fridge.synth import write_dataset
from tests.conftest import deploy_command
from tests.integration.cloud_side import cloud_client, job_accepted, subscribe, wait_for
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_bundle_delivered_activated_and_telemetry_received(broker: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path, world: dict[str, object]) -> None:
    v5 = broker == "mosquitto"
    device = f"fridge-{broker}"
    if v5:
        url: str = request.getfixturevalue("mosquitto_url")
        login, device_broker = None, BrokerConfig(url=url, protocol="5", reconnect_min_s=1)
    else:
        embedded: EmbeddedBroker = request.getfixturevalue("amqtt_broker")
        url, login = embedded.url, embedded.cloud_credentials()
        device_broker = embedded.device_credentials(device, reconnect_min_s=1)
    write_dataset(tmp_path / "frames", 8, seed=3)
    root: Path = world["root"]  # type: ignore[assignment]
    config = AgentConfig(device_id=device, groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"], inference_interval_s=0.05, telemetry_window_s=1,
                         broker=device_broker)
    transport = MqttTransport(device, config.broker, topics.state(device), offline(device).to_json())
    agent = Agent(config, transport, FolderSource(tmp_path / "frames"))
    stop = threading.Event()
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    cloud = cloud_client(url, v5, inbox, login=login)
    for kind in ("state", "events", "telemetry"):
        subscribe(cloud, f"coldchain/v1/devices/{device}/{kind}")
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        assert wait_for(inbox, lambda t, p: True if t == topics.state(device) and DeviceState.from_json(p).online
                        else None), "the agent never came online"
        bundle = world["bundles"][5]  # type: ignore[index]
        command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, f"job-{broker}")
        cloud.publish(topics.commands(device), signed(command, world["trusted_key"], device), qos=1)  # type: ignore[arg-type]
        assert wait_for(inbox, job_accepted(command.job_id)), "the agent did not take the deploy command"
        for frame in frames:  # one publish per chunk on the group topic
            cloud.publish(topics.group_chunks("eu", command.artifact.sha256), frame, qos=1)

        def probation(topic: str, payload: bytes) -> JobEvent | None:
            if topic != topics.events(device):
                return None
            event = decode_event(payload)
            if isinstance(event, JobEvent) and event.state in (JobState.PROBATION, JobState.FAILED):
                return event
            return None

        event = wait_for(inbox, probation)
        assert event is not None and event.state is JobState.PROBATION, event.reason

        def telemetry(topic: str, payload: bytes) -> Telemetry | None:
            if topic != topics.telemetry(device):
                return None
            window = Telemetry.from_json(payload)  # validates against the contract
            return window if window.inferences > 0 else None

        window = wait_for(inbox, telemetry)
        assert window is not None and window.bundle is not None and window.bundle.sequence == 5
        assert window.latency_ms is not None and window.input_stats.histograms
        assert sum(window.predictions.values()) > 0
    finally:
        stop.set()
        thread.join(timeout=10)
        cloud.loop_stop()
        cloud.disconnect()
