"""The agent speaks up: started with a frame folder that does not exist yet and a broker port where
nothing listens, it stays up, logs each cause with the next retry time, reports both faults once
the broker is there, and recovers (online, inferring, telemetry published) when both appear."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.health import ReopeningSource, read_health
from agent.loop import Agent
from benchmarks.faults.world import signed
from cloud.broker import free_port
from contract import topics
from contract.events import ErrorEvent, JobEvent, decode_event
from contract.jobs import JobState
from contract.state import DeviceState, offline
from contract.telemetry import Telemetry
from examples.fridge.synth import write_dataset
from tests.conftest import deploy_command
from tests.integration import mosquitto
from tests.integration.cloud_side import cloud_client, job_accepted, subscribe, wait_for
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.queue: queue.Queue[str] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put(record.getMessage())

    def wait(self, *parts: str, timeout: float = 30.0) -> str:
        seen = []
        while True:
            try:
                message = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line with {parts}; saw {seen}") from None
            if all(p in message for p in parts):
                return message
            seen.append(message)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("coldchain.agent")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class _Stepper:
    """Runs the agent's loop in a thread (as ``Agent.run`` does) with a gate: while the test starts the
    broker and subscribes, the agent's consumer is held, so nothing it publishes can be missed."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.go, self.held, self.stop = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.agent.deployer.resume()
        self.agent.transport.start()
        while not self.stop.is_set():
            if not self.go.is_set():
                self.held.set()
                self.go.wait(0.1)
                continue
            self.held.clear()
            self.agent.step()

    def hold(self) -> None:
        self.go.clear()
        assert self.held.wait(30), "the agent's loop did not pause"

    def finish(self) -> None:
        self.stop.set()
        self.go.set()
        self.thread.join(30)
        self.agent.transport.stop()
        self.agent.spool.close()


def test_missing_camera_and_wrong_broker_port(tmp_path: Path, world: dict[str, object], records: _Records) -> None:
    port = free_port()  # nothing listens here until the test starts Mosquitto on it
    url = f"mqtt://127.0.0.1:{port}"
    device, folder = "fridge-late", tmp_path / "frames"  # the folder does not exist yet
    root: Path = world["root"]  # type: ignore[assignment]
    config = AgentConfig(device_id=device, groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"], inference_interval_s=0.05, telemetry_window_s=1,
                         broker=BrokerConfig(url=url, protocol="5", reconnect_min_s=1, reconnect_max_s=2))
    transport = MqttTransport(device, config.broker, topics.state(device), offline(device).to_json())
    source = ReopeningSource(lambda: FolderSource(folder), str(folder), min_s=0.2, max_s=1.0)
    agent = Agent(config, transport, source)
    stepper = _Stepper(agent)
    stepper.go.set()
    stepper.thread.start()
    try:
        line = records.wait("cannot connect to the broker", "next attempt in")
        assert "Connection refused" in line and f"127.0.0.1:{port}" in line, line
        line = records.wait("is unavailable", "does not exist", "next attempt in")
        assert str(folder) in line
        health = read_health(config.data_dir)
        assert health is not None and health["connection"] == "failing" and "refused" in health["connection_cause"]
        assert health["source"].startswith("unavailable") and stepper.thread.is_alive()

        stepper.hold()
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        with mosquitto.running(conf, port):
            inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
            cloud = cloud_client(url, True, inbox)
            for kind in ("state", "events", "telemetry"):
                subscribe(cloud, f"coldchain/v1/devices/{device}/{kind}")
            stepper.go.set()
            codes: dict[str, str] = {}

            def online_and_faults(topic: str, payload: bytes) -> bool | None:
                event = decode_event(payload) if topic == topics.events(device) else None
                if isinstance(event, ErrorEvent):
                    codes[event.code] = event.message
                state = DeviceState.from_json(payload) if topic == topics.state(device) else None
                if state is not None and state.online:  # the fault began offline: the state says it on connect
                    codes["online"] = ",".join(f.code for f in state.faults)
                return True if {"online", "source_unavailable", "broker_unreachable"} <= codes.keys() else None

            assert wait_for(inbox, online_and_faults), f"not online, or faults not reported: {codes}"
            assert "does not exist" in codes["source_unavailable"] and "refused" in codes["broker_unreachable"]
            assert codes["online"] == "source_unavailable" and "unreachable for " in codes["broker_unreachable"]

            bundle = world["bundles"][5]  # type: ignore[index]
            command, chunks = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "job-late")
            cloud.publish(topics.commands(device), signed(command, world["trusted_key"], device),  # type: ignore[arg-type]
                          qos=1)
            assert wait_for(inbox, job_accepted(command.job_id)), "the agent did not take the deploy command"
            for chunk in chunks:
                cloud.publish(topics.group_chunks("eu", command.artifact.sha256), chunk, qos=1)

            def settled(topic: str, payload: bytes) -> JobEvent | None:
                event = decode_event(payload) if topic == topics.events(device) else None
                ok = isinstance(event, JobEvent) and event.state in (JobState.PROBATION, JobState.FAILED)
                return event if ok else None  # type: ignore[return-value]

            event = wait_for(inbox, settled)
            assert event is not None and event.state is JobState.PROBATION, event

            write_dataset(folder, 6, seed=4)  # the camera appears
            records.wait("frame source", "is available")
            cleared = wait_for(inbox, lambda t, p: True if t == topics.state(device) and not DeviceState.from_json(
                p).faults else None)
            assert cleared, "no state without the fault once the frames appeared"

            def inferring(topic: str, payload: bytes) -> Telemetry | None:
                telemetry = Telemetry.from_json(payload) if topic == topics.telemetry(device) else None
                return telemetry if telemetry is not None and telemetry.inferences > 0 else None

            telemetry = wait_for(inbox, inferring)
            assert telemetry is not None and telemetry.bundle is not None
            assert telemetry.bundle.sha256 == bundle.ref.sha256
            health = read_health(config.data_dir)
            assert health is not None and (health["connection"], health["source"]) == ("connected", "ok")
            cloud.loop_stop()
            cloud.disconnect()
    finally:
        stepper.finish()
