"""A real Mosquitto (MQTT v5, loopback) and the cloud's side of a conversation with it: a paho
client whose messages land in a queue, and a wait for the first message a predicate accepts.

Shared by the integration tests (``tests/integration/mosquitto.py``, ``cloud_side.py``) and the
fault harness."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.broker import free_port
from transport.config import BrokerConfig

Inbox = queue.Queue[tuple[str, bytes]]
T = TypeVar("T")


def mosquitto_binary() -> str | None:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return path if Path(path).exists() else None


def start_mosquitto(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Mosquitto and return once it accepts connections on ``port``."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (scripts/test.sh installs it from apt)")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # polling a socket: the only readiness signal Mosquitto gives
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("mosquitto did not start listening")


@contextmanager
def mosquitto(folder: Path, unbounded_queues: bool = False) -> Iterator[str]:
    """A throwaway Mosquitto on a free loopback port; yields its URL. ``unbounded_queues``: no
    per-client limit on queued messages (a fuzzer's QoS 0 burst is delivered, never dropped)."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    limits = "max_queued_messages 0\nmax_queued_bytes 0\n" if unbounded_queues else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{limits}")
    process = start_mosquitto(conf, port)
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Restartable:
    """A Mosquitto with persistence (saved every second) on a fixed loopback port, which can be
    SIGKILLed (no chance to save) and started again on the same port: a broker that dies mid-work."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = folder / "mosquitto-restartable.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n"
                             "max_queued_messages 0\nmax_queued_bytes 0\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Restartable:
        self.process = start_mosquitto(self.conf, self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: what was not saved yet (sessions, queued and in-flight messages) is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> Restartable:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def cloud_client(url: str, v5: bool, inbox: Inbox | None, subscribe: list[str] | None = None,
                 timeout: float = 30.0, on_message: Callable[[str, bytes], None] | None = None,
                 login: BrokerConfig | None = None) -> mqtt.Client:
    """Connected, with every subscription confirmed by the broker (SUBACK), when it returns.
    Messages go to ``inbox``, or to ``on_message`` when given. ``login``: the username and password
    to connect with (e.g. ``EmbeddedBroker.cloud_credentials()``)."""
    parsed = urlparse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if login is not None and login.username:
        client.username_pw_set(login.username, login.password)

    def queued(topic: str, payload: bytes) -> None:
        if inbox is not None:
            inbox.put((topic, payload))

    deliver = on_message or queued
    client.on_message = lambda c, u, m: deliver(m.topic, bytes(m.payload))
    connected = threading.Event()
    acked: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda c, u, flags, reason, props=None: connected.set()
    client.on_subscribe = lambda c, u, mid, reasons, props=None: acked.put(mid)
    client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
    client.loop_start()
    if not connected.wait(timeout):
        raise TimeoutError(f"no CONNACK from {url} within {timeout:.0f} s")
    for topic_filter in subscribe or []:
        subscribe_confirmed(client, acked, topic_filter, timeout)
    client.user_data_set(acked)
    return client


def subscribe_confirmed(client: mqtt.Client, acked: queue.Queue[int], topic_filter: str, timeout: float = 30.0) -> None:
    _, mid = client.subscribe(topic_filter, 1)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            if acked.get(timeout=remaining) == mid:
                return
        except queue.Empty:
            break
    raise AssertionError(f"no SUBACK for {topic_filter} within {timeout:.0f} s")


def subscribe(client: mqtt.Client, topic_filter: str) -> None:
    """Subscribe a ``cloud_client`` and wait until the broker confirms it."""
    subscribe_confirmed(client, client.user_data_get(), topic_filter)


def close(client: mqtt.Client) -> None:
    client.loop_stop()
    client.disconnect()


def wait_for(inbox: Inbox, predicate: Callable[[str, bytes], T | None], timeout: float = 30.0) -> T | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = inbox.get(timeout=min(left, 0.2))
        except queue.Empty:
            continue
        found = predicate(topic, payload)
        if found is not None:
            return found
    return None


def job_accepted(job_id: str) -> Callable[[str, bytes], bool | None]:
    """A ``wait_for`` predicate: the device's first event about ``job_id`` (it has taken the command
    and will keep the chunks it receives from now on)."""
    from contract.events import JobEvent, decode_event

    def accepted(topic: str, payload: bytes) -> bool | None:
        if not topic.endswith("/events"):
            return None
        event = decode_event(payload)
        return True if isinstance(event, JobEvent) and event.job_id == job_id else None

    return accepted
