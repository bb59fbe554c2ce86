"""Real agent processes (``coldchain agent run`` from a TOML config) on one Mosquitto, and the cloud's
side: one paho client for every device, its messages routed to a queue per device, with waits for
positive signals (the device online, a job event of a state)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as mqtt

from benchmarks.faults.broker import close, cloud_client
from contract import topics
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.state import DeviceState

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
Inbox = queue.Queue["Heard"]


@dataclass(frozen=True)
class Heard:
    at: float  # time.monotonic() when it arrived
    topic: str
    payload: bytes


class Cloud:
    """Subscribed to every device's state and events; each device's messages in a queue of its own."""

    def __init__(self, url: str) -> None:
        self._queues: dict[str, queue.Queue[Heard]] = {}
        self._lock = threading.Lock()
        self.client: mqtt.Client = cloud_client(url, True, None, [topics.all_devices(topics.TopicKind.STATE),
                                                                 topics.all_devices(topics.TopicKind.EVENTS)],
                                                on_message=self._route)

    def _route(self, topic: str, payload: bytes) -> None:
        device = topic.split("/")[3] if topic.count("/") >= 4 else ""
        with self._lock:
            inbox = self._queues.get(device)
        if inbox is not None:
            inbox.put(Heard(time.monotonic(), topic, payload))

    def listen(self, device: str) -> queue.Queue[Heard]:
        with self._lock:
            return self._queues.setdefault(device, queue.Queue())

    def forget(self, device: str) -> None:
        with self._lock:
            self._queues.pop(device, None)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def close(self) -> None:
        close(self.client)


def wait(inbox: queue.Queue[Heard], found: Callable[[Heard], T | None], timeout: float,
         alive: Callable[[], bool] = lambda: True) -> T | None:
    """The first message ``found`` accepts, within ``timeout`` seconds (None: none came, or
    ``alive`` said the sender is gone and nothing it sent is left to read)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if inbox.empty() and not alive():
            return None
        try:
            heard = inbox.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        result = found(heard)
        if result is not None:
            return result
    return None


def online_since(device: str, since: datetime) -> Callable[[Heard], DeviceState | None]:
    """The device's own state saying it is online, published after ``since`` (not a stale one)."""
    def found(heard: Heard) -> DeviceState | None:
        if heard.topic != topics.state(device):
            return None
        state = DeviceState.from_json(heard.payload)
        return state if state.online and state.ts >= since else None
    return found


def job_state(device: str, job: str, states: set[JobState]) -> Callable[[Heard], tuple[JobEvent, float] | None]:
    """A job event of ``job`` in one of ``states`` (with when it arrived)."""
    def found(heard: Heard) -> tuple[JobEvent, float] | None:
        if heard.topic != topics.events(device):
            return None
        event = decode_event(heard.payload)
        if isinstance(event, JobEvent) and event.job_id == job and event.state in states:
            return event, heard.at
        return None
    return found


def write_config(folder: Path, device: str, data: Path, key: Path, frames: Path, url: str) -> Path:
    config = folder / "agent.toml"
    config.write_text(f'device_id = "{device}"\ndata_dir = "{data}"\ntrusted_keys = ["{key}"]\n'
                      'inference_interval_s = 0.1\ntelemetry_window_s = 1\n'
                      f'[broker]\nurl = "{url}"\nprotocol = "5"\n'
                      f'[source]\nkind = "folder"\nlocation = "{frames}"\n')
    return config


class AgentProcess:
    """``coldchain agent run`` in a process of its own; ``fault``: COLDCHAIN_FAULT (and _AFTER)."""

    def __init__(self, config: Path, fault: str | None = None, after: int = 1) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in ("COLDCHAIN_FAULT", "COLDCHAIN_FAULT_AFTER"):
            env.pop(name, None)
        if fault:
            env |= {"COLDCHAIN_FAULT": fault, "COLDCHAIN_FAULT_AFTER": str(after)}
        code = "import sys; from coldchain.cli import main; main()"
        self.started = datetime.now(UTC)
        self.started_at = time.monotonic()
        with (config.parent / "agent.log").open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", code, "agent", "run", "--config", str(config)],
                                            env=env, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> int:
        self.process.kill()  # SIGKILL
        return self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM (the agent finishes its step and says it is offline), SIGKILL if it does not."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            return self.kill()

    def alive(self) -> bool:
        return self.process.poll() is None

    def exited(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
