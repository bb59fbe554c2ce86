"""A controller that starts again (a new process) while a wave's chunk stream was under way goes on
where the last one was: the group stream is published again for the devices still downloading,
once, instead of leaving every device to ask for the rest one by one after its stall timeout
(found by the fault harness's cloudkill row: each mid-stream kill cost ~30 s and per-device repairs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts
from cloud.controller import Controller
from cloud.fleet import add_bundle
from cloud.plan import RolloutPlan, Timeouts
from cloud.publisher import Publisher
from cloud.store import Device, Rollout, RolloutDevice, open_store, sqlite_url
from tests.cloud.test_publisher import Recorder
from tests.waiting import until

CHUNK = 4096


def _controller(sessions: sessionmaker[Session], tarball: Path, wall: list[datetime]) -> tuple[Controller, Recorder]:
    transport = Recorder()
    publisher = Publisher(transport, lambda _: tarball)  # type: ignore[arg-type]
    return Controller(sessions, transport, publisher, Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
                      clock=lambda: wall[0]), transport


def _streamed(controller: Controller, transport: Recorder) -> int:
    until(controller.publisher.idle, "the group stream to finish")
    return sum(1 for topic, _ in transport.sent if topic.endswith("/chunks") and "/groups/" in topic)


def _started(tmp_path: Path, world: dict[str, object]) -> tuple[sessionmaker[Session], str, Path, list[datetime],
                                                                 int]:
    """A rollout whose wave's chunk stream the first controller started (and published in full)."""
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        sha = add_bundle(session, bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
        session.add_all([Device(id="d1", online=True, groups=["eu"]), Device(id="d2", online=True, groups=["eu"])])
    rollout = rollouts.start(sessions, sha, RolloutPlan(waves="100%", chunk_size=CHUNK, timeouts=Timeouts(ack_s=1)))
    wall = [datetime.now(UTC)]
    first, transport = _controller(sessions, bundle.tarball, wall)
    first.step()
    wall[0] += timedelta(seconds=2)  # no device answered: the chunks flow after ack_s
    first.step()
    chunks = _streamed(first, transport)
    assert chunks == -(-bundle.tarball.stat().st_size // CHUNK)
    first.step()
    assert _streamed(first, transport) == chunks  # the controller that streams it does not stream it twice
    return sessions, rollout, bundle.tarball, wall, chunks


def _states(sessions: sessionmaker[Session], rollout: str, states: dict[str, str]) -> None:
    with sessions.begin() as session:
        for device, state in states.items():
            session.get(RolloutDevice, (rollout, device)).state = state  # type: ignore[union-attr]


def test_a_restarted_controller_streams_the_wave_again_for_devices_still_downloading(
        tmp_path: Path, world: dict[str, object]) -> None:
    sessions, rollout, tarball, wall, chunks = _started(tmp_path, world)
    _states(sessions, rollout, {"d1": "DOWNLOADING", "d2": "VERIFYING"})
    second, transport = _controller(sessions, tarball, wall)  # the process started again
    second.step()
    assert _streamed(second, transport) == chunks
    second.step()
    assert _streamed(second, transport) == chunks  # once
    with sessions() as session:
        assert session.get(Rollout, rollout).wave == 0  # type: ignore[union-attr]


def test_a_restarted_controller_does_not_stream_when_every_device_has_the_artifact(
        tmp_path: Path, world: dict[str, object]) -> None:
    sessions, rollout, tarball, wall, _ = _started(tmp_path, world)
    _states(sessions, rollout, {"d1": "VERIFYING", "d2": "PROBATION"})
    second, transport = _controller(sessions, tarball, wall)
    second.step()
    second.step()
    assert _streamed(second, transport) == 0
