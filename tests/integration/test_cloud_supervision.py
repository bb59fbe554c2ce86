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
    try:  # the broker queues only for subscriptions that exist: publish once ingestion (after its crashes) has one
        assert cloud.worker.subscribed.wait(60), f"ingestion never subscribed: failures {cloud.failures}"
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


def _stored(cloud: Cloud, device: str) -> int:
    with cloud.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(TelemetryRow)
                                  .where(TelemetryRow.device_id == device)) or 0)


def test_ingestion_goes_on_while_an_alert_check_runs(mosquitto_url: str, tmp_path: Path,
                                                     world: dict[str, object]) -> None:
    """Finding 6: the alert check ran on the ingestion loop, and ingestion stalled while it ran."""
    import threading

    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), BrokerConfig(url=mosquitto_url, protocol="5"),
                  world["trusted_key"], client_id="cloud-alerts-aside")  # type: ignore[arg-type]
    checking, release = threading.Event(), threading.Event()

    def slow_check() -> None:
        checking.set()
        release.wait(60)

    cloud._check_alerts = slow_check  # type: ignore[method-assign]
    cloud.start()
    try:
        assert checking.wait(30), "the first alert check did not start"
        device = cloud_client(mosquitto_url, True, queue.Queue())
        for seq in (1, 2):
            device.publish(topics.telemetry("fridge-aside"), window("fridge-aside", seq), qos=1).wait_for_publish(5)
        device.disconnect()
        until(lambda: _stored(cloud, "fridge-aside") == 2, "the windows stored while the alert check still runs",
              timeout=20)
        assert not release.is_set()
    finally:
        release.set()
        cloud.stop()


def test_a_crashing_publisher_stream_is_counted_and_resumes(tmp_path: Path, world: dict[str, object]) -> None:
    """A wave's chunk stream ran in a bare thread: a crash ended it silently, mid-artifact."""
    from cloud.publisher import Artifact

    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), BrokerConfig(url="mqtt://127.0.0.1:9", protocol="5"),
                  world["trusted_key"], client_id="cloud-publisher")  # type: ignore[arg-type]
    tarball = tmp_path / "bundle.tar.gz"
    tarball.write_bytes(bytes(range(256)) * 40)  # 10 chunks of 1 KiB
    artifact = Artifact.load(tarball, chunk_size=1024)
    sent: list[bytes] = []

    def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        if len(sent) == 4 and cloud.failures.get("publisher", 0) == 0:
            raise RuntimeError("the client's socket broke mid-write")
        sent.append(payload)
        return len(sent)

    cloud.transport.publish = publish  # type: ignore[method-assign]
    try:
        cloud.publisher.start_group(artifact, "r1.w1")
        until(lambda: len(sent) >= len(artifact.frames), "every chunk published",
              detail=lambda: f"{len(sent)} sent, failures {cloud.failures}", timeout=20)
        assert sent == artifact.frames  # resumed where it was: each chunk once, in order
        assert cloud.failures == {"publisher": 1}
    finally:
        cloud.stop()


def test_the_http_api_is_restarted_after_it_died(tmp_path: Path, world: dict[str, object],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's thread died for good when uvicorn failed (here: its port was taken at start)."""
    import socket
    import urllib.error
    import urllib.request

    from cloud.broker import free_port
    from coldchain.cloud_cli import _serve_api

    monkeypatch.setenv("COLDCHAIN_API_TOKEN", "t" * 32)
    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), BrokerConfig(url="mqtt://127.0.0.1:9", protocol="5"),
                  world["trusted_key"], client_id="cloud-api")  # type: ignore[arg-type]
    port = free_port()
    squatter = socket.create_server(("127.0.0.1", port))
    try:
        _serve_api(cloud, port)
        until(lambda: cloud.failures.get("api", 0) >= 1, "the API's first failure (port taken)", timeout=20,
              detail=lambda: f"failures {cloud.failures}")
        squatter.close()

        def answers() -> bool:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/alerts",
                                             headers={"Authorization": f"Bearer {'t' * 32}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        until(answers, "the API answering once its port is free", timeout=30,
              detail=lambda: f"failures {cloud.failures}")
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token
            urllib.request.urlopen(f"http://127.0.0.1:{port}/alerts", timeout=2)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as not_ready:  # the broker (port 9) never answers
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
        assert not_ready.value.code == 503 and b'"broker":"not connected"' in not_ready.value.read()
    finally:
        squatter.close()
        cloud.stop()
