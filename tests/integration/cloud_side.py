"""The cloud's side of a broker conversation in integration tests: a paho client whose messages
land in a queue, and a wait for the first message a predicate accepts."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Inbox = queue.Queue[tuple[str, bytes]]
T = TypeVar("T")


def cloud_client(url: str, v5: bool, inbox: Inbox, subscribe: list[str] | None = None) -> mqtt.Client:
    parsed = urlparse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
    client.loop_start()
    for topic_filter in subscribe or []:
        client.subscribe(topic_filter, 1)
    return client


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
