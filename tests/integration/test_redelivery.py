"""What the cloud's attempt counter (cloud/attempts.py) relies on: a QoS 1 message a manually
acknowledging client received and never acknowledged comes back from Mosquitto, on the next
connection of that session, marked as a duplicate (DUP); a message delivered for the first time
is not."""

from __future__ import annotations

import queue

import pytest

from tests.integration.cloud_side import cloud_client
from tests.waiting import until
from transport.client import Connected, Inbound, MqttTransport, Received, Subscribed
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
TOPIC = "coldchain/v1/devices/fridge-dup/telemetry"


def _next(inbox: queue.Queue[Inbound], kind: type) -> object:
    while True:
        item = inbox.get(timeout=30)
        if isinstance(item, kind):
            return item


def test_an_unacknowledged_message_comes_back_marked_dup(mosquitto_url: str) -> None:
    config = BrokerConfig(url=mosquitto_url, protocol="5")
    first = MqttTransport("cloud-dup", config, manual_ack=True)
    first.start()
    _next(first.inbox, Connected)
    first.subscribe([TOPIC])
    _next(first.inbox, Subscribed)
    device = cloud_client(mosquitto_url, True, queue.Queue())
    device.publish(TOPIC, b"one", qos=1).wait_for_publish(10)
    received = _next(first.inbox, Received)
    assert isinstance(received, Received) and received.payload == b"one" and not received.dup
    first.stop()  # never acknowledged: as if the process died while handling it
    device.publish(TOPIC, b"two", qos=1).wait_for_publish(10)  # queued for the session meanwhile

    again = MqttTransport("cloud-dup", config, manual_ack=True)
    again.start()
    try:
        got: dict[bytes, bool] = {}

        def both() -> bool:
            try:
                while True:
                    item = again.inbox.get_nowait()
                    if isinstance(item, Received):
                        got[item.payload] = item.dup
                        again.ack(item.mid, item.qos)
            except queue.Empty:
                return len(got) == 2

        until(both, "both messages on the next connection", 30)
        assert got == {b"one": True, b"two": False}, got
    finally:
        again.stop()
        device.disconnect()
