"""The agent driven without a broker: an in-memory transport, an agent on the demo fridge's signed
bundles (``world``), and ``deliver`` (a deploy command, then every chunk on the group topic); the
transport and ``deliver`` live in ``benchmarks.faults.device``, which the fault harness shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import MemoryTransport, deliver
from examples.fridge.synth import write_dataset

__all__ = ["MemoryTransport", "deliver"]  # tests import them from here


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
