"""An agent without a broker: an in-memory transport that records what the agent publishes (and
lets a caller wait for it), ``deliver`` (a deploy command, then every chunk on the group topic),
and the data directory of a device that already runs a known-good bundle.

Shared by the agent tests (``tests/agent/conftest.py``) and the fault harness."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentConfig, ProbationConfig
from agent.deploy import Deployer
from agent.frames import FrameSource
from agent.loop import Agent
from agent.runtimes import available
from benchmarks.faults.world import World, deploy_command, signed
from compiler.bundle import Bundle
from contract import signing, topics
from contract.commands import Command, DeployCommand
from contract.events import ErrorEvent, Event, JobEvent, decode_event
from contract.jobs import JobState
from contract.transfer import decode_chunk
from transport.client import Inbound, Received

T = TypeVar("T")
NO_FRAMES = ProbationConfig(max_s=1)
"""A fleet without frames has no live evidence: its probation ends, explicitly, at 1 s (SUCCEEDED with the
reason "only 0 live inferences ..."), where it would otherwise wait up to 24 h (docs/agent.md "Probation")."""


class MemoryTransport:
    def __init__(self) -> None:
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.published: list[tuple[str, bytes, bool]] = []
        self.subscribed: list[str] = []
        self.mid = 0
        self._changed = threading.Condition()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        with self._changed:
            self.mid += 1
            self.published.append((topic, payload, retain))
            self._changed.notify_all()
            return self.mid

    def subscribe(self, topic_filters: list[str]) -> None:
        self.subscribed += topic_filters

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in list(self.published) if t == topic]

    def wait_for(self, found: Callable[[list[tuple[str, bytes, bool]]], T | None], timeout: float) -> T | None:
        """Wait until ``found`` (called on everything published so far) returns something."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (result := found(list(self.published))) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return result


def events(transport: MemoryTransport, device: str) -> list[Event]:
    return [decode_event(p) for p in transport.on(topics.events(device))]


def errors(transport: MemoryTransport, device: str) -> list[ErrorEvent]:
    return [e for e in events(transport, device) if isinstance(e, ErrorEvent)]


def job_events(transport: MemoryTransport, device: str, job: str) -> list[JobEvent]:
    return [e for e in events(transport, device) if isinstance(e, JobEvent) and e.job_id == job]


def operator_key(a: Agent) -> Ed25519PrivateKey:
    """The private key beside a public key the agent trusts as operator (the world's ``ops`` key)."""
    for public in [*a.config.operator_keys, *a.config.trusted_keys]:
        if public.with_suffix(".key").is_file():
            return signing.load_private_key(public.with_suffix(".key"))
    raise AssertionError(f"no private key beside the operator keys of {a.config.device_id}")


def send_command(a: Agent, body: Command, key: Ed25519PrivateKey | None = None) -> None:
    """``body`` signed for this agent (as the cloud signs it), handed to it on its command topic."""
    a.handle(Received(topics.commands(a.config.device_id), signed(body, key or operator_key(a), a.config.device_id)))


def deliver(a: Agent, bundle: Bundle, seq: int, job: str, shadow_s: float | None = None,
            group: str = "eu", key: Ed25519PrivateKey | None = None) -> DeployCommand:
    """The deploy command for ``bundle`` (signed), then every chunk of it on the group topic."""
    deploy, frames = deploy_command(bundle.tarball, bundle.ref.sha256, seq, job, group=group)
    deploy = deploy.model_copy(update={"shadow_s": shadow_s})
    send_command(a, deploy, key)
    for frame in frames:
        a.handle(Received(topics.group_chunks(group, deploy.artifact.sha256), frame))
    return deploy


def pass_probation(deployer: Deployer, job: str) -> None:
    """Let a job in PROBATION succeed now (as if its probation time had passed without fault)."""
    record = deployer.jobs.get(job)
    if record is None or record.state is not JobState.PROBATION:
        raise AssertionError(f"job {job} is not in probation: {record and record.state}")
    deployer.probation(record, 100, 0, 0, 0.5, now=(record.probation_started or 0) + 10_000)


def agent_config(world: World, data: Path, device: str = "fridge-7", **settings: object) -> AgentConfig:
    return AgentConfig.model_validate({"device_id": device, "groups": ["eu"], "data_dir": data,
                                       "trusted_keys": [world.public_key], **settings})


def new_agent(world: World, data: Path, source: FrameSource | None = None, device: str = "fridge-7",
              **settings: object) -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    return Agent(agent_config(world, data, device, **settings), transport, source), transport


def known_good_template(world: World, data: Path, sequence: int = 5, chunk: int = 16 * 1024) -> Path:
    """A data directory whose device runs bundle ``sequence``, known-good (probation passed)."""
    shutil.rmtree(data, ignore_errors=True)
    deployer = Deployer(data, world.trust, available(), lambda *_: None)
    bundle = world.bundles[sequence]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, sequence, "job-old", chunk=chunk)
    deployer.on_deploy(command)
    for frame in frames:
        deployer.on_chunk(command.job_id, decode_chunk(frame))
    pass_probation(deployer, command.job_id)
    return data
