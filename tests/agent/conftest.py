"""The agent driven without a broker: an in-memory transport, an agent on the demo fridge's signed
bundles (``world``), and ``deliver`` (a deploy command, then every chunk on the group topic)."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from agent.mqtt import Inbound, Received
from contract import topics
from contract.commands import DeployCommand
from examples.fridge.synth import write_dataset
from tests.conftest import deploy_command


class MemoryTransport:
    def __init__(self) -> None:
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.published: list[tuple[str, bytes, bool]] = []
        self.subscribed: list[str] = []
        self.mid = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        self.mid += 1
        self.published.append((topic, payload, retain))
        return self.mid

    def subscribe(self, topic_filters: list[str]) -> None:
        self.subscribed += topic_filters

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.published if t == topic]


@pytest.fixture
def agent(tmp_path: Path, world: dict[str, object]) -> tuple[Agent, MemoryTransport]:
    root: Path = world["root"]  # type: ignore[assignment]
    frames = tmp_path / "frames"
    write_dataset(frames, 6, seed=9)
    (frames / "broken.jpg").write_bytes(b"")
    config = AgentConfig(device_id="fridge-7", groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"])
    transport = MemoryTransport()
    return Agent(config, transport, FolderSource(frames)), transport


def deliver(a: Agent, bundle: object, seq: int, job: str, shadow_s: float | None = None) -> DeployCommand:
    """The deploy command for ``bundle``, then every chunk of it on the group topic."""
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, seq, job)  # type: ignore[attr-defined]
    command = command.model_copy(update={"shadow_s": shadow_s})
    a.handle(Received(topics.commands("fridge-7"), command.to_json()))
    for frame in frames:
        a.handle(Received(topics.group_chunks("eu", command.artifact.sha256), frame))
    return command


