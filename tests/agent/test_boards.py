"""The board check (issue 13): a bundle names the boards it is for, and a device of another board
refuses it before installing anything; the cloud refuses to start such a rollout before any byte
is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.loop import Agent
from benchmarks.faults.device import send_command
from benchmarks.faults.world import deploy_command, resigned_bundle
from cloud import rollouts
from cloud.errors import RolloutError
from cloud.fleet import add_bundle
from cloud.plan import RolloutPlan
from cloud.store import Device, Rollout, open_store, sqlite_url
from compiler.target import load_target
from contract import topics
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.manifest import RuntimeRequirement, TargetInfo
from tests.agent.conftest import MemoryTransport
from transport.client import Connected, Received


@pytest.fixture
def x86_bundle(tmp_path: Path, world: dict[str, object]) -> tuple[Path, str]:
    """The demo bundle as the compiler writes it for the x86-64 target (signed by the same key)."""
    target = load_target("x86-64-avx512-ort")
    info = TargetInfo(name=target.name, profile=target.model_dump(mode="json"),
                      runtime=RuntimeRequirement(name=target.runtime.name, min_version=target.runtime.min_version))
    return resigned_bundle(world["bundles"][6], world["trusted_key"], tmp_path / "x86", "x86",  # type: ignore[index,arg-type]
                           update={"target": info.model_dump(mode="json"), "boards": target.board.names})


def _deploy(tmp_path: Path, world: dict[str, object], board: str, bundle: tuple[Path, str]) -> list[JobEvent]:
    transport = MemoryTransport()
    config = AgentConfig(device_id="fridge-7", groups=["eu"], data_dir=tmp_path / board, board=board,
                         trusted_keys=[world["root"] / "keys" / "ops.pub"])  # type: ignore[operator]
    a = Agent(config, transport, None)
    a.handle(Connected())
    command, frames = deploy_command(*bundle, 6, "j-x86")
    send_command(a, command)
    for frame in frames:
        a.handle(Received(topics.group_chunks("eu", command.artifact.sha256), frame))
    assert a.deployer.slots.pointer().active is None or board == "x86-64"
    return [e for e in map(decode_event, transport.on(topics.events("fridge-7"))) if isinstance(e, JobEvent)]


def test_a_device_refuses_a_bundle_for_another_board(tmp_path: Path, world: dict[str, object],
                                                      x86_bundle: tuple[Path, str]) -> None:
    events = _deploy(tmp_path, world, "rpi4", x86_bundle)
    assert events[-1].state is JobState.FAILED
    assert events[-1].reason == ("the bundle is for boards x86-64 (target x86-64-avx512-ort); this device is a rpi4: "
                                 "refused before installing")
    assert JobState.INSTALLING not in {e.state for e in events}
    # the same bundle on an x86-64 device installs
    assert _deploy(tmp_path, world, "x86-64", x86_bundle)[-1].state is JobState.PROBATION


def test_the_cloud_refuses_a_rollout_for_another_board(tmp_path: Path, world: dict[str, object],
                                                        x86_bundle: tuple[Path, str]) -> None:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    with sessions.begin() as session:
        sha = add_bundle(session, x86_bundle[0], world["trust"]).sha256  # type: ignore[arg-type]
        arm = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
        session.add_all([Device(id="pi-1", online=True, groups=["eu"], board="rpi4"),
                         Device(id="pc-1", online=True, groups=["eu"], board="x86-64"),
                         Device(id="pi-2", online=True, groups=["eu"], board="rpi4")])
    with pytest.raises(RolloutError, match=r"is for boards x86-64.*pi-1, pi-2 \(rpi4\)"):
        rollouts.start(sessions, sha, RolloutPlan())
    with sessions() as session:
        assert session.query(Rollout).count() == 0  # nothing stored, so nothing is ever sent
    with pytest.raises(RolloutError, match=r"pc-1 \(x86-64\)"):
        rollouts.start(sessions, arm, RolloutPlan())
    assert rollouts.start(sessions, sha, RolloutPlan.model_validate({"selector": {"boards": ["x86-64"]}}))
