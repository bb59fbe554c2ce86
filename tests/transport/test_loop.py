"""The shared network loop drives more connections than select() can watch: descriptors up to
1040 are taken first, so the clients' sockets land beyond select()'s limit of 1024."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloud.broker import EmbeddedBroker
from contract import topics
from transport.client import Connected, MqttTransport, Received, Subscribed
from transport.loop import SharedLoop


@pytest.fixture
def high_fds(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Yields ``fill()``: take every free descriptor below 1040, so new sockets land above
    select()'s limit. Call it again right before opening sockets: objects of earlier tests
    collected in between may have closed low descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard file limit {hard} does not allow descriptors past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held: list[int] = []

    def fill() -> None:
        held.append(os.open(tmp_path, os.O_RDONLY))
        while held[-1] < 1040:  # os.open returns the lowest free descriptor
            held.append(os.open(tmp_path, os.O_RDONLY))

    fill()
    try:
        yield fill
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_clients_beyond_fd_1024_connect_publish_and_receive(high_fds: Callable[[], None]) -> None:
    loop = SharedLoop()
    topic = topics.group_chunks("loop", "0" * 64)
    with EmbeddedBroker() as broker:
        configs = {f"loop-{i}": broker.device_credentials(f"loop-{i}") for i in range(5)}
        cloud = MqttTransport("loop-cloud", broker.cloud_credentials(), loop=loop)
        high_fds()
        transports = [MqttTransport(device, config, loop=loop) for device, config in configs.items()]
        starters = [threading.Thread(target=t.start) for t in [cloud, *transports]]  # concurrently, as agents do
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        for t in [cloud, *transports]:
            assert isinstance(t.inbox.get(timeout=30), Connected)
        for t in transports:
            mid = t.subscribe([topics.group_artifacts("loop")])
            assert t.inbox.get(timeout=30) == Subscribed(mid, True)  # the broker's SUBACK: in place
        # select() could not watch these (other tests' threads may free a low descriptor meanwhile)
        assert sum(t.client.socket().fileno() >= 1024 for t in transports) >= 3
        assert cloud.publish(topic, b"hello") is not None
        for t in transports:
            item = t.inbox.get(timeout=30)
            while not isinstance(item, Received):
                item = t.inbox.get(timeout=30)
            assert item.payload == b"hello"
        for t in [cloud, *transports]:
            t.stop()
    loop.stop()
