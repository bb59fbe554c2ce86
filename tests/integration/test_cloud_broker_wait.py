"""A broker that is not there yet (or too busy to answer) never stops the cloud (issue 12,
finding 7): `Cloud.start()` gave up after 15 s. The cloud keeps retrying with backoff, says what
it waits for, subscribes once connected, and stores what devices publish from then on."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloud.broker import free_port
from cloud.service import Cloud
from cloud.store import TelemetryRow, sqlite_url
from contract import topics
from tests.cloud.test_ingest import window
from tests.integration import mosquitto
from tests.integration.cloud_side import cloud_client
from tests.waiting import until
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


def test_the_cloud_waits_for_a_broker_that_comes_up_later(tmp_path: Path, world: dict[str, object]) -> None:
    mosquitto.binary()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    said: queue.Queue[str] = queue.Queue()
    broker: list[object] = []

    def start_broker_once_the_cloud_waits() -> None:
        while True:
            message = said.get(timeout=60)
            if "waiting for the broker" in message:
                broker.append(mosquitto.start(conf, port))
                return

    starter = threading.Thread(target=start_broker_once_the_cloud_waits, daemon=True)
    starter.start()
    config = BrokerConfig(url=f"mqtt://127.0.0.1:{port}", protocol="5", reconnect_min_s=1, reconnect_max_s=2)
    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), config, world["trusted_key"],  # type: ignore[arg-type]
                  client_id="cloud-late-broker", notify=said.put)
    try:
        cloud.start()
        starter.join(timeout=60)
        assert broker, "the cloud never said it was waiting for the broker"
        until(cloud.worker.subscribed.is_set, "the cloud's subscriptions, once the broker is up", timeout=60)
        device = cloud_client(f"mqtt://127.0.0.1:{port}", True, queue.Queue())
        for seq in (1, 2, 3):
            device.publish(topics.telemetry("fridge-late"), window("fridge-late", seq), qos=1).wait_for_publish(5)
        device.disconnect()

        def stored() -> int:
            with cloud.sessions() as session:
                return int(session.scalar(select(func.count()).select_from(TelemetryRow)) or 0)

        until(lambda: stored() == 3, "the windows published once the broker came up")
    finally:
        cloud.stop()
        for process in broker:
            process.terminate()  # type: ignore[attr-defined]
            process.wait(timeout=10)  # type: ignore[attr-defined]
