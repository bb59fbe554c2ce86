"""Rollback means back to the last known-good bundle, and the slot pointer always tells the truth
(issue 11, finding 1). Driven through the agent with an in-memory transport and signed commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.loop import Agent
from agent.status import data_dir_status
from benchmarks.faults.world import signed_rollback
from contract import topics
from contract.bundle import manifest_sha256
from contract.commands import CancelCommand
from contract.common import BundleRef
from contract.events import ErrorEvent, decode_event
from contract.jobs import JobState
from tests.agent.conftest import MemoryTransport, deliver
from transport.client import Connected, Received

DEVICE = "fridge-7"


def _signed(world: dict[str, object], job: str, to: BundleRef | None = None) -> bytes:
    return signed_rollback(world["trusted_key"], job, to)  # type: ignore[arg-type]


def _succeed(a: Agent, job: str) -> None:
    record = a.deployer.jobs.get(job)
    assert record is not None and record.state is JobState.PROBATION
    a.deployer.probation(record, 100, 0, 0, 0.5, now=(record.probation_started or 0) + 10_000)
    assert record.state is JobState.SUCCEEDED


def _five_good_six_active(a: Agent, world: dict[str, object]) -> None:
    bundles = world["bundles"]  # type: ignore[index]
    a.handle(Connected())
    deliver(a, bundles[5], 5, "j5")  # type: ignore[index]
    _succeed(a, "j5")
    deliver(a, bundles[6], 6, "j6")  # type: ignore[index]


def _truthful(a: Agent) -> None:
    """What the pointer says is active is what the active slot holds."""
    pointer = a.deployer.slots.pointer()
    if pointer.active is not None:
        assert manifest_sha256(a.deployer.slots.path(pointer.active)) == pointer.active_sha256


def _refusals(t: MemoryTransport) -> list[str]:
    return [e.message for e in map(decode_event, t.on(topics.events(DEVICE)))
            if isinstance(e, ErrorEvent) and e.code == "rollback_refused"]


def test_rollback_to_a_bundle_whose_slot_was_overwritten_is_refused(agent: tuple[Agent, MemoryTransport],
                                                                   world: dict[str, object]) -> None:
    """4 then 5 succeed; 6 is installed for a shadow run into 4's slot and cancelled. A signed
    rollback to 4 must not activate the slot (which now holds 6): 4 is no longer on the device."""
    a, t = agent
    bundles = world["bundles"]  # type: ignore[index]
    a.handle(Connected())
    deliver(a, bundles[4], 4, "j4")  # type: ignore[index]
    _succeed(a, "j4")
    deliver(a, bundles[5], 5, "j5")  # type: ignore[index]
    _succeed(a, "j5")
    deliver(a, bundles[6], 6, "j6", shadow_s=60)  # type: ignore[index]
    assert a.deployer.jobs.get("j6").state is JobState.SHADOW  # type: ignore[union-attr]
    a.handle(Received(topics.commands(DEVICE), CancelCommand(job_id="c6", target_job_id="j6").to_json()))
    _truthful(a)
    a.handle(Received(topics.commands(DEVICE), _signed(world, "rb-4", bundles[4].ref)))  # type: ignore[index]
    _truthful(a)
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]
    assert any("not on this device" in m for m in _refusals(t)), _refusals(t)
    # without a target: the last known-good other than the active one is gone too; refused, and said so
    a.handle(Received(topics.commands(DEVICE), _signed(world, "rb-any")))
    _truthful(a)
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]
    assert any("no known-good bundle" in m for m in _refusals(t)), _refusals(t)


def test_rollback_goes_to_the_last_known_good_and_marks_the_bundle_bad(agent: tuple[Agent, MemoryTransport],
                                                                      world: dict[str, object]) -> None:
    a, t = agent
    bundles = world["bundles"]  # type: ignore[index]
    _five_good_six_active(a, world)
    a.handle(Received(topics.commands(DEVICE), _signed(world, "rb-1")))
    _truthful(a)
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]
    assert a.deployer.jobs.get("j6").state is JobState.ROLLED_BACK  # type: ignore[union-attr]
    # 6 is bad on this device now: a rollback "to" it never re-activates it
    a.handle(Received(topics.commands(DEVICE), _signed(world, "rb-2", bundles[6].ref)))  # type: ignore[index]
    _truthful(a)
    assert a.deployer.slots.pointer().active_sha256 == bundles[5].ref.sha256  # type: ignore[index]
    assert any("bad" in m for m in _refusals(t)), _refusals(t)
    slots = {s["sha256"]: s["status"] for s in data_dir_status(a.config.data_dir)["slots"].values()  # type: ignore[attr-defined]
             if s["sha256"]}
    assert slots == {bundles[5].ref.sha256: "good", bundles[6].ref.sha256: "bad"}  # type: ignore[index]


def test_the_state_reports_each_slot_with_its_status(agent: tuple[Agent, MemoryTransport],
                                                     world: dict[str, object]) -> None:
    from contract.state import DeviceState

    a, t = agent
    bundles = world["bundles"]  # type: ignore[index]
    _five_good_six_active(a, world)
    state = DeviceState.from_json(t.on(topics.state(DEVICE))[-1])
    by_sha = {s.bundle.sha256: s.status.value for s in state.slots.values() if s.bundle is not None}
    assert by_sha == {bundles[5].ref.sha256: "good", bundles[6].ref.sha256: "candidate"}  # type: ignore[index]
    assert state.active is not None and state.active.sha256 == bundles[6].ref.sha256  # type: ignore[index]


def test_a_failed_first_bundle_leaves_no_model_and_is_marked_bad(tmp_path: Path,
                                                                 agent: tuple[Agent, MemoryTransport],
                                                                 world: dict[str, object]) -> None:
    a, _ = agent
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    record = a.deployer.jobs.get("j5")
    assert record is not None
    a.deployer.probation(record, inferences=50, errors=0, non_finite=3, p95_ms=0.5)
    assert record.state is JobState.ROLLED_BACK
    pointer = a.deployer.slots.pointer()
    assert pointer.active is None
    assert [s.status.value for s in a.deployer.slots.slots().values() if s.bundle] == ["bad"]


def test_a_damaged_pointer_or_slot_is_repaired_at_start_and_reported(tmp_path: Path,
                                                                    agent: tuple[Agent, MemoryTransport],
                                                                    world: dict[str, object]) -> None:
    """Garbled pointer: set aside, rebuilt from what verifies, the newest active. A slot whose
    content is not what the pointer says: forgotten, the known-good one in the other slot active."""
    from agent.frames import FolderSource

    a, _ = agent
    _five_good_six_active(a, world)
    _succeed(a, "j6")
    pointer_file = a.deployer.slots.root / "ACTIVE"
    pointer_file.write_bytes(b'{"active": "b", "slots": {garbled')

    def restart() -> tuple[Agent, MemoryTransport]:
        transport = MemoryTransport()
        again = Agent(a.config, transport, FolderSource(tmp_path / "frames"))
        again.handle(Connected())
        return again, transport

    again, t = restart()
    _truthful(again)
    assert again.deployer.slots.pointer().active_sequence == 6
    (event,) = [e for e in map(decode_event, t.on(topics.events(DEVICE))) if isinstance(e, ErrorEvent)]
    assert event.code == "slots_recovered" and "unreadable" in event.message
    assert list(pointer_file.parent.glob("ACTIVE.damaged-*"))
    # the active slot's content is damaged (its manifest no longer the one recorded)
    active = again.deployer.slots.active_path()
    assert active is not None
    (active / "manifest.json").write_bytes(b"{}")
    third, t3 = restart()
    _truthful(third)
    assert third.deployer.slots.pointer().active_sequence == 5
    (event,) = [e for e in map(decode_event, t3.on(topics.events(DEVICE))) if isinstance(e, ErrorEvent)]
    assert event.code == "slots_recovered" and "forgotten" in event.message
    assert third.bundle_ref() is not None and third.bundle_ref().sequence == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["probation failed", "operator rollback", "active bundle damaged"])
def test_every_pointer_a_fallback_writes_is_safe_to_wake_up_to(agent: tuple[Agent, MemoryTransport],
                                                               world: dict[str, object], how: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the fault harness's power-cut row (benchmarks/faults/powercut.py): the failed bundle
    was marked bad and the known-good one activated in two pointer writes; a power cut between them
    left the failed bundle active and marked bad (the rollback lost; for a damaged bundle: none active
    though a known-good one was there). Each pointer written on the way must be one a device can
    wake up to: its active slot a candidate or known-good one, never none while a known-good is left."""
    from agent.slots import Pointer, SlotStore
    from contract.state import SlotStatus

    a, _ = agent
    _five_good_six_active(a, world)
    written: list[Pointer] = []
    real = SlotStore.write

    def recorded(self: SlotStore, pointer: Pointer) -> Pointer:
        written.append(pointer)
        return real(self, pointer)

    monkeypatch.setattr(SlotStore, "write", recorded)
    record = a.deployer.jobs.get("j6")
    assert record is not None
    if how == "probation failed":
        a.deployer.probation(record, inferences=50, errors=0, non_finite=3, p95_ms=0.5)
    elif how == "operator rollback":
        a.handle(Received(topics.commands(DEVICE), _signed(world, "rb-cut")))
    else:
        a.deployer.active_unusable("model.onnx does not load")
    assert written and written[-1].active_sha256 == world["bundles"][5].ref.sha256  # type: ignore[index]
    for pointer in written:
        assert pointer.active is not None, f"{how}: a pointer with no bundle active was written"
        assert pointer.slots[pointer.active].status in (SlotStatus.CANDIDATE, SlotStatus.GOOD), \
            f"{how}: a pointer naming a {pointer.slots[pointer.active].status.value} slot active was written"
