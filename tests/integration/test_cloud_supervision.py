"""One part of the cloud crashing never stops the others (issue 12, finding 1): ingestion and the
rollout controller each fail on a turn; the failures are counted, the cloud thread lives on, and
telemetry published afterwards is stored."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloud.service import Cloud
from cloud.store import TelemetryRow, sqlite_url
from contract import topics
from tests.cloud.test_ingest import window
from tests.integration.cloud_side import cloud_client
from tests.waiting import until
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


def test_a_crashing_part_is_counted_and_the_cloud_goes_on(mosquitto_url: str, tmp_path: Path,
                                                          world: dict[str, object]) -> None:
    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), BrokerConfig(url=mosquitto_url, protocol="5"),
                  world["trusted_key"], client_id="cloud-supervised")  # type: ignore[arg-type]
    real_drain, real_step = cloud.worker.drain, cloud.controller.step
    crashes = {"ingestion": 2, "controller": 2}

    def drain(timeout: float = 0.2) -> int:
        if crashes["ingestion"]:
            crashes["ingestion"] -= 1
            raise RuntimeError("the store went away")
        return real_drain(timeout)

    def step() -> None:
        if crashes["controller"]:
            crashes["controller"] -= 1
            raise KeyError("a bug in a step")
        real_step()

    cloud.worker.drain, cloud.controller.step = drain, step  # type: ignore[method-assign]
    cloud.start()
    try:
        device = cloud_client(mosquitto_url, True, queue.Queue())
        for seq in (1, 2, 3):
            device.publish(topics.telemetry("fridge-sup"), window("fridge-sup", seq), qos=1).wait_for_publish(5)
        device.disconnect()
        def stored() -> int:
            with cloud.sessions() as session:
                return int(session.scalar(select(func.count()).select_from(TelemetryRow)
                                          .where(TelemetryRow.device_id == "fridge-sup")) or 0)

        until(lambda: stored() == 3 and cloud.failures.get("controller") == 2, "the windows and the controller's "
              "second crash", detail=lambda: f"{stored()} stored, failures {cloud.failures}")
        assert stored() == 3, cloud.failures
        assert cloud.failures == {"ingestion": 2, "controller": 2}
        assert cloud._thread is not None and cloud._thread.is_alive()
    finally:
        cloud.stop()
