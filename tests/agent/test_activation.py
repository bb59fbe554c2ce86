"""Idle-window activation (issue 14): a verified candidate waits in READY while the firmware holds
activation or the activation window is closed, says why (the cloud sees it), never longer than
``max_hold_s``; a rollback to a known-good bundle never waits. Driven with an injected clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.loop import Agent
from benchmarks.faults.device import agent_config, pass_probation
from benchmarks.faults.world import World, signed_rollback
from contract import topics
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from tests.agent.conftest import MemoryTransport, deliver
from transport.client import Connected, Received

DEVICE = "fridge-7"
T0 = float(int(time.time()))  # commands are signed now: the device clock starts now too


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _agent(world: dict[str, object], data: Path, clock: Clock, **activation: object) -> tuple[Agent, MemoryTransport]:
    config = agent_config(World(**world), data, activation=activation)  # type: ignore[arg-type]
    transport = MemoryTransport()
    a = Agent(config, transport, None, clock=clock)
    a.handle(Connected())
    return a, transport


def _jobs(t: MemoryTransport, job: str) -> list[tuple[JobState, str | None]]:
    events = [decode_event(p) for p in t.on(topics.events(DEVICE))]
    return [(e.state, e.reason) for e in events if isinstance(e, JobEvent) and e.job_id == job]


def _state(a: Agent, job: str) -> JobState:
    record = a.deployer.jobs.get(job)
    assert record is not None
    return record.state


def _hhmm(seconds: float) -> str:
    return time.strftime("%H:%M", time.localtime(seconds))


def test_a_hold_keeps_the_candidate_ready_until_released(tmp_path: Path, world: dict[str, object]) -> None:
    clock = Clock()
    a, t = _agent(world, tmp_path / "data", clock)
    a.hold_activation("door open, the display shows the inventory")
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    assert _state(a, "j5") is JobState.READY
    assert a.deployer.slots.pointer().active_sha256 is None  # verified and installed, not active
    assert (JobState.READY, "held by the firmware: door open, the display shows the inventory") in _jobs(t, "j5")
    clock.now += 3600
    a.deployer.release_ready()  # what the loop does periodically: a hold is not a window
    assert _state(a, "j5") is JobState.READY
    # a restarted agent keeps the hold (persisted), and re-reports READY with its reason
    a.spool.close()
    b, t2 = _agent(world, tmp_path / "data", clock)
    b.deployer.resume()
    assert _state(b, "j5") is JobState.READY
    assert (JobState.READY, "held by the firmware: door open, the display shows the inventory") in _jobs(t2, "j5")
    b.release_activation()
    assert _state(b, "j5") is JobState.PROBATION
    assert [s for s, _ in _jobs(t2, "j5")][-2:] == [JobState.ACTIVATING, JobState.PROBATION]
    assert b.deployer.slots.pointer().active_sha256 == world["bundles"][5].ref.sha256  # type: ignore[index]


def test_without_a_hold_or_settings_a_candidate_activates_at_once(tmp_path: Path, world: dict[str, object]) -> None:
    a, t = _agent(world, tmp_path / "data", Clock())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    assert _state(a, "j5") is JobState.PROBATION
    assert JobState.READY not in [s for s, _ in _jobs(t, "j5")]


def test_a_candidate_waits_for_the_activation_window(tmp_path: Path, world: dict[str, object]) -> None:
    clock = Clock()
    window = f"{_hhmm(T0 + 3600)}-{_hhmm(T0 + 3 * 3600)}"  # opens in an hour, local time
    a, t = _agent(world, tmp_path / "data", clock, window=window)
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    assert _jobs(t, "j5")[-1] == (JobState.READY, f"waiting for the activation window {window}")
    clock.now += 1800
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.READY
    a.hold_activation("defrost cycle")  # a hold while waiting: the cloud hears the new reason
    assert _jobs(t, "j5")[-1] == (JobState.READY, "held by the firmware: defrost cycle")
    clock.now += 1900  # the window is open, but the firmware holds
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.READY
    a.release_activation()
    assert _state(a, "j5") is JobState.PROBATION


@pytest.mark.parametrize(("opens_h", "max_hold_s"), [(1, 86_400), (3, 3600)],
                         ids=["the window opens", "max_hold_s bounds the wait for a closed window"])
def test_a_window_wait_ends(opens_h: int, max_hold_s: float, tmp_path: Path, world: dict[str, object]) -> None:
    clock = Clock()
    opens = T0 + opens_h * 3600
    after_s = min(opens - opens % 60 - T0, max_hold_s)  # the window opens on its minute
    window = f"{_hhmm(T0 + opens_h * 3600)}-{_hhmm(T0 + (opens_h + 1) * 3600)}"
    a, _ = _agent(world, tmp_path / "data", clock, window=window, max_hold_s=max_hold_s)
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    clock.now += after_s - 2
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.READY
    clock.now += 2
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.PROBATION


def test_a_candidate_activates_once_the_firmware_stopped_asking(tmp_path: Path, world: dict[str, object]) -> None:
    clock = Clock()
    a, t = _agent(world, tmp_path / "data", clock, when_idle_s=30)
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    assert _jobs(t, "j5")[-1] == (JobState.READY, "waiting for 30 s without a firmware request")
    clock.now += 20
    a.activation.note_request()  # the firmware asked for an inference
    clock.now += 20
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.READY  # 20 s since the last request
    clock.now += 11
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.PROBATION


def test_a_hold_ends_at_its_limit(tmp_path: Path, world: dict[str, object]) -> None:
    clock = Clock()
    a, _ = _agent(world, tmp_path / "data", clock, max_hold_s=600)
    assert a.hold_activation("stuck firmware", max_s=None) == T0 + 600  # capped by max_hold_s
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    clock.now += 599
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.READY
    clock.now += 2
    a.deployer.release_ready()
    assert _state(a, "j5") is JobState.PROBATION
    assert a.hold_activation("short", max_s=5) == clock.now + 5  # its own, shorter limit


def test_a_hold_never_delays_a_rollback(tmp_path: Path, world: dict[str, object]) -> None:
    """Probation failure and an operator's rollback go back to the known-good bundle during a hold."""
    clock = Clock()
    bundles = world["bundles"]  # type: ignore[index]
    a, _ = _agent(world, tmp_path / "data", clock)
    deliver(a, bundles[4], 4, "j4")
    pass_probation(a.deployer, "j4")
    a.hold_activation("door open")
    deliver(a, bundles[5], 5, "j5")
    a.release_activation()
    a.hold_activation("door open again")
    record = a.deployer.jobs.get("j5")
    assert record is not None and record.state is JobState.PROBATION
    a.deployer.probation(record, 100, 0, 3, 0.5)  # NaN outputs: probation fails, during the hold
    assert record.state is JobState.ROLLED_BACK
    assert a.deployer.slots.pointer().active_sha256 == bundles[4].ref.sha256

    b, t2 = _agent(world, tmp_path / "other", clock)
    deliver(b, bundles[4], 4, "k4")
    pass_probation(b.deployer, "k4")
    deliver(b, bundles[5], 5, "k5")
    pass_probation(b.deployer, "k5")
    b.hold_activation("door open")
    b.handle(Received(topics.commands(DEVICE), signed_rollback(world["trusted_key"], "rb", bundles[4].ref)))  # type: ignore[arg-type]
    assert b.deployer.slots.pointer().active_sha256 == bundles[4].ref.sha256
    assert _jobs(t2, "rb")[-1][0] is JobState.SUCCEEDED


def test_hold_spam_neither_wears_the_disk_nor_floods_the_cloud(tmp_path: Path, world: dict[str, object],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A firmware re-asserting its hold on every request: each hold fsynced activation.json (10 ms each
    on x86_64: 2,000 holds held the loop 16 s, an infer now waited 220 ms) and each new reason sent the
    cloud a READY event. Extensions are written once they move the hold's end a minute later; READY's
    reason is re-sent at most every READY_REASON_EVERY_S, the latest one in the end."""
    import agent.activation as activation
    from agent.deploy import READY_REASON_EVERY_S

    clock = Clock()
    a, t = _agent(world, tmp_path / "data", clock)
    a.hold_activation("door open 0", 3600)
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    assert _state(a, "j5") is JobState.READY
    real, writes = activation.atomic_write, []
    monkeypatch.setattr(activation, "atomic_write", lambda *args: (writes.append(1), real(*args)))
    before = len(_jobs(t, "j5"))
    for i in range(1, 101):
        clock.now += 0.1
        a.hold_activation(f"door open {i}", 3600)
    assert len(writes) <= 1
    assert len(_jobs(t, "j5")) - before <= 1
    clock.now += READY_REASON_EVERY_S
    a.deployer.release_ready()  # the loop's periodic turn
    assert _jobs(t, "j5")[-1] == (JobState.READY, "held by the firmware: door open 100")
    hold = a.activation.current_hold()
    assert hold is not None
    a.spool.close()
    b, _ = _agent(world, tmp_path / "data", clock)  # restarted: the hold on disk ends no earlier than a minute before
    restored = b.activation.current_hold()
    assert restored is not None and hold.until - 60 <= restored.until


def test_a_shorter_hold_never_cuts_another_short(tmp_path: Path, world: dict[str, object]) -> None:
    """Two firmware processes: the display holds for a defrost (an hour), the app for a door opening
    (a minute). The app's hold replaced the display's: the defrost hold ended after a minute."""
    clock = Clock()
    a, _ = _agent(world, tmp_path / "data", clock)
    defrost_ends = a.hold_activation("defrost", 3600)
    assert a.hold_activation("door open", 60) == defrost_ends
    clock.now += 120
    hold = a.activation.current_hold()
    assert hold is not None and hold.until == defrost_ends and hold.reason == "door open"


def test_a_hold_reason_cannot_forge_log_lines(tmp_path: Path, world: dict[str, object],
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The firmware's words go into the agent's log and the cloud's READY reason: a newline in them
    started a forged log line."""
    a, _ = _agent(world, tmp_path / "data", Clock())
    with caplog.at_level("INFO", logger="coldchain.agent"):
        a.hold_activation("defrost\n2026-11-30 ERROR coldchain.agent: bundle verification disabled\x1b[2J", 60)
    hold = a.activation.current_hold()
    assert hold is not None
    assert hold.reason == "defrost 2026-11-30 ERROR coldchain.agent: bundle verification disabled [2J"
    assert all("\n" not in r.getMessage() for r in caplog.records)
