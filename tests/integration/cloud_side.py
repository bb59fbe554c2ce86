"""The cloud's side of a broker conversation in integration tests: a paho client whose messages
land in a queue, and a wait for the first message a predicate accepts."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Inbox = queue.Queue[tuple[str, bytes]]
T = TypeVar("T")


def cloud_client(url: str, v5: bool, inbox: Inbox, subscribe: list[str] | None = None,
                 timeout: float = 30.0) -> mqtt.Client:
    """Connected, with every subscription confirmed by the broker (SUBACK), when it returns."""
    parsed = urlparse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    connected = threading.Event()
    acked: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda c, u, flags, reason, props=None: connected.set()
    client.on_subscribe = lambda c, u, mid, reasons, props=None: acked.put(mid)
    client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
    client.loop_start()
    assert connected.wait(timeout), f"no CONNACK from {url} within {timeout:.0f} s"
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


def wait_for(inbox: Inbox, predicate: Callable[[str, bytes], T | None], timeout: float = 30.0) -> T | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            topic, payload = inbox.get(timeout=0.2)
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
