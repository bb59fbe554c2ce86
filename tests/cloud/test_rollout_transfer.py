"""A rollout plan's ``chunk_size`` and ``bytes_per_s`` take effect (issue 12.7): the controller has
the artifact chunked with the plan's chunk size (the deploy command and the chunks say so) and its
group streams limited to the plan's rate, measured on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud import rollouts
from cloud.controller import Controller
from cloud.fleet import add_bundle
from cloud.plan import RolloutPlan, Timeouts
from cloud.publisher import Publisher
from cloud.store import Device, open_store, sqlite_url
from contract.commands import DeployCommand
from contract.transfer import decode_chunk
from tests.cloud.test_publisher import FakeClock, Recorder
from tests.waiting import until


def test_the_plans_chunk_size_and_rate_take_effect(tmp_path: Path, world: dict[str, object]) -> None:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        sha = add_bundle(session, bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
        session.add_all([Device(id="d1", online=True, groups=["eu"]), Device(id="d2", online=True, groups=["eu"])])
    size = bundle.tarball.stat().st_size
    rate = size / 4  # the whole artifact takes ~4 s at the plan's rate
    plan = RolloutPlan(waves="100%", chunk_size=4096, bytes_per_s=rate, timeouts=Timeouts(ack_s=1))
    rollout = rollouts.start(sessions, sha, plan)
    clock, transport = FakeClock(), Recorder()
    publisher = Publisher(transport, lambda _: bundle.tarball, clock=clock.now, sleep=clock.sleep)  # type: ignore[arg-type]
    wall = [datetime.now(UTC)]
    controller = Controller(sessions, transport, publisher, Ed25519PrivateKey.generate(), clock=lambda: wall[0])
    controller.step()
    commands = [DeployCommand.from_json(p) for t, p in transport.sent if t.endswith("/commands")]
    assert len(commands) == 2 and {c.artifact.chunk_size for c in commands} == {4096}
    wall[0] += timedelta(seconds=2)  # no device answered: the chunks flow after ack_s
    controller.step()
    until(publisher.idle, "the group stream to finish")
    chunks = [decode_chunk(p) for t, p in transport.sent if t.endswith("/chunks")]
    assert len(chunks) == -(-size // 4096) == commands[0].artifact.chunk_count
    assert {len(c.data) for c in chunks[:-1]} == {4096}
    assert b"".join(c.data for c in chunks) == bundle.tarball.read_bytes()
    assert rollout in publisher.limits  # the rollout's own limit ...
    assert clock.now() >= 3.5  # ... held the stream to its rate (the bucket's burst is a quarter second)
