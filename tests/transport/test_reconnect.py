"""What the transport says when it cannot connect: the next attempt it announces is when paho
really tries again, and a broker that takes the TCP connection but never answers the CONNECT (one
that speaks another MQTT version, like amqtt to an MQTT 5 client) is a failed attempt with that
hint, not a connection "lost"."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from transport.client import ConnectFailed, Inbound, MqttTransport
from transport.config import BrokerConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _next(transport: MqttTransport, timeout: float = 30.0) -> tuple[float, Inbound]:
    item = transport.inbox.get(timeout=timeout)
    return time.monotonic(), item


def test_the_announced_next_attempt_is_when_paho_tries_again() -> None:
    """Found running `coldchain agent run` on a wrong port: the log said `next attempt in 1.0 s`, `2.0 s`,
    `4.0 s` while the attempts came 3, 4 and 8 s apart (the first connection waits twice in paho's loop)."""
    transport = MqttTransport("probe", BrokerConfig(url=f"mqtt://127.0.0.1:{_free_port()}", reconnect_min_s=1))
    transport.start()
    try:
        times, announced = [], []
        for _ in range(3):
            at, item = _next(transport)
            assert isinstance(item, ConnectFailed), item
            times.append(at)
            announced.append(item.retry_in_s)
    finally:
        transport.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(gap - said) < 0.6 for gap, said in zip(gaps, announced, strict=False)), (gaps, announced)


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP server that reads the CONNECT and never answers it (amqtt, 3.1.1 only, does this to MQTT 5)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    server.close()
    for conn in held:
        conn.close()


def test_a_broker_that_never_answers_the_connect_is_a_failed_attempt_with_the_protocol_hint(
        silent_broker: int) -> None:
    """Found running the agent (MQTT 5) against `coldchain broker` (amqtt, MQTT 3.1.1): 30 s of silence, then
    `lost the broker ...: Keep alive timeout`, for a broker it never had and with no word of the protocol."""
    transport = MqttTransport("probe", BrokerConfig(url=f"mqtt://127.0.0.1:{silent_broker}", keepalive_s=5))
    transport.start()
    try:
        _, item = _next(transport)
    finally:
        transport.stop()
    assert isinstance(item, ConnectFailed), item
    assert "never answered the MQTT 5 CONNECT" in item.cause and "protocol" in item.cause, item.cause
    assert item.retry_in_s >= 1
