"""Real brokers for integration tests: amqtt in-process (MQTT 3.1.1) and Mosquitto (MQTT v5)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.broker import EmbeddedBroker, free_port
from tests.integration import mosquitto


@pytest.fixture(scope="session")
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """The embedded broker as it runs by default: credentials required, the contract's ACL applied
    (clients take ``cloud_credentials()`` / ``device_credentials(id)``)."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mosquitto.binary()
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with mosquitto.running(conf, port):
        yield f"mqtt://127.0.0.1:{port}"
