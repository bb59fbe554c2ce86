"""Issue 12.4, the device's side: a command under a job id the device already knows (the cloud
re-sends until the device's job state shows it) is answered with that job's state, as a job
event under the command's own job id, and never acted on twice; a restart does not forget."""

from __future__ import annotations

from pathlib import Path

from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import job_events, new_agent, operator_key, pass_probation
from benchmarks.faults.world import World, deploy_command, signed, signed_rollback
from contract import topics
from contract.commands import CancelCommand
from contract.events import ErrorEvent, decode_event
from contract.jobs import JobState
from tests.agent.conftest import MemoryTransport, deliver
from transport.client import Connected, Received

DEVICE = "fridge-7"


def _command(a: Agent, payload: bytes) -> None:
    a.handle(Received(topics.commands(DEVICE), payload))


def _cancel(a: Agent, job: str) -> bytes:
    return signed(CancelCommand(job_id=f"{job}.cancel", target_job_id=job), operator_key(a))


def test_a_resent_cancel_is_answered_with_its_state_and_not_acted_on_again(
        agent: tuple[Agent, MemoryTransport], world: dict[str, object], fault_world: World, tmp_path: Path) -> None:
    a, t = agent
    a.handle(Connected())
    bundle = world["bundles"][5]  # type: ignore[index]
    command, _ = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "r1.fridge-7")
    _command(a, signed(command, operator_key(a)))  # downloading: no chunk arrives
    _command(a, _cancel(a, "r1.fridge-7"))
    record = a.deployer.jobs.get("r1.fridge-7")
    assert record is not None and record.state is JobState.FAILED
    answers = job_events(t, DEVICE, "r1.fridge-7.cancel")
    assert [(e.state, "cancelled" in (e.reason or "")) for e in answers] == [(JobState.SUCCEEDED, True)]

    _command(a, _cancel(a, "r1.fridge-7"))  # re-sent (signed again): the same answer, nothing done again
    again = job_events(t, DEVICE, "r1.fridge-7.cancel")
    assert len(again) == 2 and again[1].state is JobState.SUCCEEDED and again[1].reason == answers[0].reason
    assert [h[0] for h in record.history].count(JobState.FAILED.value) == 1

    restarted, t2 = new_agent(fault_world, tmp_path / "data", FolderSource(tmp_path / "frames"))
    restarted.handle(Connected())
    restarted.handle(Received(topics.commands(DEVICE), _cancel(a, "r1.fridge-7")))
    assert [e.state for e in job_events(t2, DEVICE, "r1.fridge-7.cancel")] == [JobState.SUCCEEDED]


def test_a_cancel_that_overtakes_its_deploy_keeps_the_deploy_from_running(fault_world: World, tmp_path: Path) -> None:
    a, t = new_agent(fault_world, tmp_path / "data")
    a.handle(Connected())
    _command(a, _cancel(a, "r2.fridge-7"))  # reordered delivery: the cancel comes first
    assert [e.state for e in job_events(t, DEVICE, "r2.fridge-7.cancel")] == [JobState.SUCCEEDED]
    deliver(a, fault_world.bundles[5], 5, "r2.fridge-7")
    assert a.deployer.jobs.get("r2.fridge-7") is None  # never started
    assert a.deployer.slots.pointer().active_sha256 is None
    states = job_events(t, DEVICE, "r2.fridge-7")
    assert [e.state for e in states] == [JobState.FAILED] and "cancel" in (states[0].reason or "")


def test_a_resent_rollback_is_answered_and_not_acted_on_again(agent: tuple[Agent, MemoryTransport],
                                                              world: dict[str, object]) -> None:
    a, t = agent
    bundles = world["bundles"]  # type: ignore[index]
    a.handle(Connected())
    deliver(a, bundles[5], 5, "j5")  # type: ignore[index]
    pass_probation(a.deployer, "j5")
    deliver(a, bundles[6], 6, "j6")  # type: ignore[index]
    rollback = signed_rollback(world["trusted_key"], "j6.rollback")  # type: ignore[arg-type]
    _command(a, rollback)
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]
    _command(a, rollback)  # acting again would look for another known-good bundle and be refused
    answers = job_events(t, DEVICE, "j6.rollback")
    assert [e.state for e in answers] == [JobState.SUCCEEDED, JobState.SUCCEEDED]
    assert answers[0].reason == answers[1].reason and "#5" in (answers[0].reason or "")
    refused = [e for e in map(decode_event, t.on(topics.events(DEVICE))) if isinstance(e, ErrorEvent)
               and e.code == "rollback_refused"]
    assert refused == []
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]


def test_a_refused_rollback_is_answered_failed_with_the_reason(agent: tuple[Agent, MemoryTransport],
                                                               world: dict[str, object]) -> None:
    a, t = agent
    a.handle(Connected())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    pass_probation(a.deployer, "j5")
    _command(a, signed_rollback(world["trusted_key"], "j5.rollback"))  # type: ignore[arg-type]  # nothing to go to
    answers = job_events(t, DEVICE, "j5.rollback")
    assert [e.state for e in answers] == [JobState.FAILED] and answers[0].reason
