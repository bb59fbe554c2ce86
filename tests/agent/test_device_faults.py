"""What is wrong on a device is in its retained state (``DeviceState.faults``), not only in an error
event that scrolls away: a new state when a fault starts and when it clears, never one per failed
retry; the broker's absence, which cannot be published while it lasts, is told on reconnect with how
long and why. Driven through the in-memory transport with injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agent.config import AgentConfig
from agent.health import read_health, reopening
from agent.loop import Agent
from contract import topics
from contract.acks import TelemetryAck
from contract.events import ErrorEvent, decode_event
from contract.state import DeviceState, FaultCode
from examples.fridge.synth import write_dataset
from tests.agent.conftest import MemoryTransport
from transport.client import Connected, ConnectFailed, Disconnected, Received

START = 1_790_000_000.0  # the agent's wall clock (injected): 2026-09-21


def _states(transport: MemoryTransport) -> list[DeviceState]:
    return [DeviceState.from_json(p) for t, p, retained in transport.published
            if t == topics.state("fridge-7") and retained]


def _agent(tmp_path: Path, world: dict[str, object], source_at: list[float], wall: list[float],
           **limits: int) -> tuple[Agent, MemoryTransport, Path]:
    root: Path = world["root"]  # type: ignore[assignment]
    frames = tmp_path / "frames"
    write_dataset(frames, 2, seed=3)
    config = AgentConfig(device_id="fridge-7", groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"], limits=limits)
    transport = MemoryTransport()
    source = reopening("folder", str(frames), True, 4096 * 4096, clock=lambda: source_at[0])
    return Agent(config, transport, source, clock=lambda: wall[0]), transport, frames


def test_a_removed_folder_is_a_fault_in_the_state_until_it_returns(tmp_path: Path,
                                                                    world: dict[str, object]) -> None:
    source_at, wall = [0.0], [START]
    a, t, frames = _agent(tmp_path, world, source_at, wall)
    a.handle(Connected())
    assert [s.faults for s in _states(t)] == [[]]
    assert a.infer_once() == "no active bundle"
    frames.rename(tmp_path / "away")
    wall[0] += 60
    for _ in range(6):  # retried with backoff: 1 s, 2 s, 4 s ...
        assert str(a.infer_once()).startswith("the frame source is unavailable")
        source_at[0] += 10
    states = _states(t)
    assert len(states) == 2, "a state per failed retry, or none when the fault began"
    (fault,) = states[-1].faults
    assert fault.code is FaultCode.SOURCE_UNAVAILABLE and "does not exist" in fault.message
    assert fault.since == datetime.fromtimestamp(START + 60, UTC) and str(frames) in fault.message
    assert "next attempt" not in fault.message  # the retained state does not carry a stale retry time
    assert read_health(a.config.data_dir)["faults"][0]["code"] == "source_unavailable"  # type: ignore[index]
    (tmp_path / "away").rename(frames)
    source_at[0] += 60
    assert a.infer_once() == "no active bundle"
    assert a.infer_once() == "no active bundle"
    states = _states(t)
    assert len(states) == 3 and states[-1].faults == [] and states[-1].online
    assert read_health(a.config.data_dir)["faults"] == []  # type: ignore[index]
    a.handle(Disconnected("gone", 1.0))
    a.handle(Connected())  # every (re)connection publishes the state as it is: still fault-free
    assert len(_states(t)) == 4 and _states(t)[-1].faults == []


def test_a_fault_that_starts_offline_is_in_the_state_published_on_reconnect(tmp_path: Path,
                                                                             world: dict[str, object]) -> None:
    source_at, wall = [0.0], [START]
    a, t, frames = _agent(tmp_path, world, source_at, wall)
    frames.rename(tmp_path / "away")
    assert str(a.infer_once()).startswith("the frame source is unavailable")
    a.handle(Connected())  # the state published offline is lost (a real transport drops it); this one is not
    assert [f.code for f in _states(t)[-1].faults] == [FaultCode.SOURCE_UNAVAILABLE]


def test_the_broker_away_is_told_on_reconnect_with_how_long_and_why(tmp_path: Path,
                                                                    world: dict[str, object]) -> None:
    source_at, wall = [0.0], [START]
    a, t, _ = _agent(tmp_path, world, source_at, wall)
    for _ in range(4):  # no broker at start: the same cause every attempt
        a.handle(ConnectFailed("[Errno 111] Connection refused", 5.0))
        wall[0] += 30
    a.handle(Connected())
    a.handle(Disconnected("keepalive timeout", 1.0))
    wall[0] += 7
    a.handle(ConnectFailed("[Errno 113] No route to host", 2.0))
    wall[0] += 3
    a.handle(Connected())
    told = [e for e in map(decode_event, t.on(topics.events("fridge-7"))) if isinstance(e, ErrorEvent)]
    assert [e.code for e in told] == ["broker_unreachable", "broker_unreachable"]
    assert "unreachable for 2 min (since 2026-09-21T" in told[0].message and "Connection refused" in told[0].message
    assert "unreachable for 10 s" in told[1].message and "keepalive timeout" in told[1].message
    assert "the last attempt: [Errno 113] No route to host" in told[1].message
    assert all(s.faults == [] for s in _states(t))


def test_a_full_spool_is_a_fault_until_the_cloud_confirms_windows(tmp_path: Path,
                                                                  world: dict[str, object]) -> None:
    source_at, wall = [0.0], [START]
    a, t, _ = _agent(tmp_path, world, source_at, wall, spool_max_windows=2)
    a.handle(Connected())
    for _ in range(2):
        a.close_window()
    assert _states(t)[-1].faults == []
    a.close_window()  # the third evicts the first: telemetry is being lost
    a.close_window()
    states = _states(t)
    assert len(states) == 2 and [f.code for f in states[-1].faults] == [FaultCode.SPOOL_FULL]
    assert "2 windows" in states[-1].faults[0].message
    a.publish_pending()
    a.handle(Received(topics.acks("fridge-7"), TelemetryAck.of("fridge-7", a.spool.epoch, [3, 4])[0].to_json()))
    a.close_window()
    states = _states(t)
    assert len(states) == 3 and states[-1].faults == []


def test_the_on_request_source_check_puts_the_fault_on_the_state_and_clears_it(tmp_path: Path,
                                                                                world: dict[str, object]) -> None:
    """With ``trigger = "on_request"`` the schedule's turn only checks the source (``FirmwareLink.check_source``);
    it reported the fault as an event but never published the state (a copy of the agent's check had drifted)."""
    source_at, wall = [0.0], [START]
    a, t, frames = _agent(tmp_path, world, source_at, wall)
    a.handle(Connected())
    frames.rename(tmp_path / "away")
    a.firmware.check_source()
    assert [f.code for f in _states(t)[-1].faults] == [FaultCode.SOURCE_UNAVAILABLE]
    (tmp_path / "away").rename(frames)
    source_at[0] += 60
    a.firmware.check_source()
    assert _states(t)[-1].faults == []
