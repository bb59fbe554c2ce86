"""Issue 13, "commands that cannot be replayed": a device acts only on a command signed by an
operator key for *it*, not expired by its trusted time, under a job id it has not seen with other
content; everything else is refused with an error event naming the reason, and counted. Devices
whose clock is 1970 or a year ahead behave as docs/security.md ("Commands and replay") says."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.config import AgentConfig
from agent.loop import Agent
from benchmarks.faults.device import job_events, pass_probation, send_command
from benchmarks.faults.world import World, deploy_command, signed
from contract import topics
from contract.commands import CancelCommand, RollbackCommand, SetConfigCommand
from contract.events import ErrorEvent, decode_event
from contract.jobs import JobState
from tests.agent.conftest import MemoryTransport, deliver
from transport.client import Connected, Received

DEVICE = "fridge-7"
YEAR = 365 * 86400.0


def _agent(world: World, data: Path, clock: Callable[[], float] = time.time,
           device: str = DEVICE) -> tuple[Agent, MemoryTransport]:
    config = AgentConfig(device_id=device, groups=["eu"], data_dir=data, trusted_keys=[world.public_key])
    transport = MemoryTransport()
    a = Agent(config, transport, None, clock=clock)
    a.handle(Connected())
    return a, transport


def _refusals(t: MemoryTransport, device: str = DEVICE) -> list[tuple[str, str | None, str]]:
    return [(e.code.removeprefix("command_refused."), e.job_id, e.message)
            for e in map(decode_event, t.on(topics.events(device)))
            if isinstance(e, ErrorEvent) and e.code.startswith("command_refused.")]


def _five_then_six(a: Agent, world: World) -> None:
    deliver(a, world.bundles[5], 5, "j5")
    pass_probation(a.deployer, "j5")
    deliver(a, world.bundles[6], 6, "j6")
    pass_probation(a.deployer, "j6")


def _active(a: Agent) -> str | None:
    return a.deployer.slots.pointer().active_sha256


def test_signed_rollback_bytes_replayed_after_a_newer_deploy_do_not_roll_it_back(fault_world: World,
                                                                                 tmp_path: Path) -> None:
    """The issue's finding: the same signed rollback bytes, replayed after a newer deploy, rolled
    it back. Within its validity the replay is answered with the job's old state; after it, refused."""
    wall = [time.time()]
    a, t = _agent(fault_world, tmp_path / "data", lambda: wall[0])
    _five_then_six(a, fault_world)
    rollback = signed(RollbackCommand(job_id="j6.rollback", reason="gate failed"), fault_world.trusted_key)
    a.handle(Received(topics.commands(DEVICE), rollback))
    assert _active(a) == fault_world.bundles[5].ref.sha256
    deliver(a, fault_world.bundles[6], 6, "j6b")  # the newer deploy
    pass_probation(a.deployer, "j6b")
    a.handle(Received(topics.commands(DEVICE), rollback))  # replayed at once: a re-send, answered
    assert _active(a) == fault_world.bundles[6].ref.sha256
    assert [e.state for e in job_events(t, DEVICE, "j6.rollback")] == [JobState.SUCCEEDED] * 2
    wall[0] += 3600  # an hour later the bytes have expired
    a.handle(Received(topics.commands(DEVICE), rollback))
    assert _active(a) == fault_world.bundles[6].ref.sha256
    assert [(r[0], r[1]) for r in _refusals(t)] == [("expired", "j6.rollback")]
    assert a.gate.refused["expired"] == 1


def test_a_command_for_another_device_is_refused(fault_world: World, tmp_path: Path) -> None:
    a, t = _agent(fault_world, tmp_path / "a")
    _five_then_six(a, fault_world)
    for_b = signed(RollbackCommand(job_id="j6.rollback", reason="gate failed"), fault_world.trusted_key, "fridge-8")
    a.handle(Received(topics.commands(DEVICE), for_b))  # captured on fridge-8's topic, replayed here
    readdressed = for_b.replace(b'"device_id":"fridge-8"', b'"device_id":"fridge-7"')
    a.handle(Received(topics.commands(DEVICE), readdressed))  # edited: the signature no longer matches
    assert _active(a) == fault_world.bundles[6].ref.sha256
    refused = _refusals(t)
    assert [r[0] for r in refused] == ["other_device", "bad_signature"]
    assert "is for device fridge-8, not fridge-7" in refused[0][2]
    assert "does not match the signed bytes" in refused[1][2]


def test_an_expired_command_is_refused(fault_world: World, tmp_path: Path) -> None:
    a, t = _agent(fault_world, tmp_path / "data")
    _five_then_six(a, fault_world)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    a.handle(Received(topics.commands(DEVICE), signed(RollbackCommand(job_id="rb-old", reason="x"),
                                                      fault_world.trusted_key, now=yesterday)))
    assert _active(a) == fault_world.bundles[6].ref.sha256
    (reason, job, message), = _refusals(t)
    assert (reason, job) == ("expired", "rb-old") and "expired at" in message
    assert job_events(t, DEVICE, "rb-old") == []  # refused, not answered as a job


def test_a_known_job_id_with_other_content_is_refused(fault_world: World, tmp_path: Path) -> None:
    a, t = _agent(fault_world, tmp_path / "data")
    deliver(a, fault_world.bundles[5], 5, "j5")  # in probation
    other, _ = deploy_command(fault_world.bundles[6].tarball, fault_world.bundles[6].ref.sha256, 6, "j5")
    send_command(a, other)  # the same job id, another bundle
    pass_probation(a.deployer, "j5")
    send_command(a, CancelCommand(job_id="j5", target_job_id="j5"))  # the finished job's id, other content
    deliver(a, fault_world.bundles[5], 5, "j5")  # the same content again, re-signed: a re-send
    assert [r[:2] for r in _refusals(t)] == [("job_id_reused", "j5"), ("job_finished", "j5")]
    assert "finished (SUCCEEDED)" in _refusals(t)[1][2]
    assert [e.state for e in job_events(t, DEVICE, "j5")][-1] is JobState.SUCCEEDED  # the re-send's answer
    assert _active(a) == fault_world.bundles[5].ref.sha256
    # remembered across a restart: the content hash is on disk
    b, t2 = _agent(fault_world, tmp_path / "data")
    send_command(b, CancelCommand(job_id="j5", target_job_id="j5"))
    assert [r[:2] for r in _refusals(t2)] == [("job_finished", "j5")]


def test_an_unsigned_or_old_version_command_is_refused(fault_world: World, tmp_path: Path) -> None:
    a, t = _agent(fault_world, tmp_path / "data")
    old = (b'{"schema_version":1,"type":"set_config","job_id":"c1","issued_at":"2026-01-01T00:00:00Z",'
           b'"expires_at":null,"inference_interval_s":3600}')
    a.handle(Received(topics.commands(DEVICE), old))
    unsigned = SetConfigCommand(job_id="c2", device_id=DEVICE, inference_interval_s=3600).to_json()
    a.handle(Received(topics.commands(DEVICE), unsigned))
    a.handle(Received(topics.commands(DEVICE), b'{"schema_version":2,"type":"set_config"}'))  # malformed
    assert a.config.inference_interval_s != 3600
    refused = _refusals(t)
    assert [r[0] for r in refused] == ["old_version", "unsigned"]
    assert "version 1 command" in refused[0][2] and "carries no authorization" in refused[1][2]
    assert a.malformed == 1 and dict(a.gate.refused) == {"old_version": 1, "unsigned": 1}


def test_a_set_config_interval_takes_effect_at_once(fault_world: World, tmp_path: Path) -> None:
    """The issue: after ``inference_interval_s: 3600`` and back, windows had 0 inferences for 11
    minutes, because the inference scheduled under the old interval was not moved."""
    a, t = _agent(fault_world, tmp_path / "data")
    send_command(a, SetConfigCommand(job_id="c-slow", inference_interval_s=3600))
    a.step()  # the due inference runs and the next is scheduled an hour away
    assert a.next_inference > time.monotonic() + 3000
    send_command(a, SetConfigCommand(job_id="c-fast", inference_interval_s=0.5))
    assert a.config.inference_interval_s == 0.5
    assert a.next_inference <= time.monotonic() + 0.5
    assert [(e.state, e.reason) for e in job_events(t, DEVICE, "c-fast")] == [
        (JobState.SUCCEEDED, "applied inference_interval_s=0.5")]


def test_a_device_whose_clock_is_1970_takes_fresh_commands_and_refuses_stale_ones(fault_world: World,
                                                                                  tmp_path: Path) -> None:
    """Trusted time is never earlier than the newest issue time the device verified (persisted)."""
    a, t = _agent(fault_world, tmp_path / "data", clock=lambda: 0.0)
    key = fault_world.trusted_key
    stale = signed(SetConfigCommand(job_id="c-stale", inference_interval_s=60), key,
                   now=datetime.now(UTC) - timedelta(hours=1))  # captured an hour ago
    send_command(a, SetConfigCommand(job_id="c-now", inference_interval_s=2))  # fresh: taken
    assert a.config.inference_interval_s == 2
    a.handle(Received(topics.commands(DEVICE), stale))
    assert a.config.inference_interval_s == 2
    assert [r[0] for r in _refusals(t)] == ["expired"]
    b, t2 = _agent(fault_world, tmp_path / "data", clock=lambda: 0.0)  # a power cut: still 1970
    b.handle(Received(topics.commands(DEVICE), stale))
    assert [r[0] for r in _refusals(t2)] == ["expired"]
    assert b.gate.trusted_now().year == datetime.now(UTC).year


def test_a_device_whose_clock_is_a_year_ahead_refuses_commands_and_says_why(fault_world: World,
                                                                            tmp_path: Path) -> None:
    a, t = _agent(fault_world, tmp_path / "data", clock=lambda: time.time() + YEAR)
    send_command(a, SetConfigCommand(job_id="c-now", inference_interval_s=2))
    assert a.config.inference_interval_s != 2
    (reason, job, message), = _refusals(t)
    assert (reason, job) == ("expired", "c-now")
    assert "device clock is 365." in message and "set it" in message
    # set right, the same device takes the cloud's commands again
    a.gate.clock = time.time
    send_command(a, SetConfigCommand(job_id="c-again", inference_interval_s=2))
    assert a.config.inference_interval_s == 2


def test_the_command_log_is_bounded(fault_world: World, tmp_path: Path) -> None:
    a, _ = _agent(fault_world, tmp_path / "data")
    a.commands.keep = 5
    for n in range(8):
        send_command(a, SetConfigCommand(job_id=f"c{n}", inference_interval_s=1 + n))
    assert [a.commands.get(f"c{n}") is not None for n in range(8)] == [False] * 3 + [True] * 5


def test_a_deploy_job_from_before_signed_commands_resumes_after_the_upgrade(fault_world: World,
                                                                            tmp_path: Path) -> None:
    """A job file written by the previous agent holds a version 1 command: it is still this job's."""
    a, _ = _agent(fault_world, tmp_path / "data")
    bundle = fault_world.bundles[5]
    deploy, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "j-old")
    send_command(a, deploy)  # downloading
    path = tmp_path / "data" / "jobs" / "j-old.json"
    data = json.loads(path.read_text())
    data["command"] = {k: v for k, v in data["command"].items() if k not in ("device_id", "authorization")}
    data["command"]["schema_version"] = 1
    path.write_text(json.dumps(data))
    b, t = _agent(fault_world, tmp_path / "data")
    b.deployer.resume()
    for frame in frames:
        b.handle(Received(topics.group_chunks("eu", deploy.artifact.sha256), frame))
    assert [e.state for e in job_events(t, DEVICE, "j-old")][-1] is JobState.PROBATION
    assert b.deployer.jobs.damaged == []
    send_command(b, deploy)  # the cloud's re-send, now signed: answered with the job's state
    assert _refusals(t) == [] and job_events(t, DEVICE, "j-old")[-1].state is JobState.PROBATION
