"""Defence in depth (issue 14 hardening): a bug met by one unit of work (an inbound message, a local
API request, an inference tick, a deploy step) is logged with its traceback once per code location,
counted, reported as an ``internal_error`` event, and the agent goes on with the next one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agent.loop import Agent
from benchmarks.faults.device import errors, job_events
from contract import topics
from contract.acks import TelemetryAck
from contract.jobs import JobState
from tests.agent.conftest import MemoryTransport, deliver
from tests.agent.test_local_api import LineClient, _agent
from transport.client import Connected, Received


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None and "internal error" in r.getMessage()]


def test_a_bug_met_by_an_inbound_message_drops_it_and_the_next_is_handled(
        agent: tuple[Agent, MemoryTransport], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, t = agent
    a.handle(Connected())

    def broken(payload: bytes) -> NoReturn:
        raise KeyError("epoch")

    monkeypatch.setattr(a.uplink, "on_ack", broken)
    ack = TelemetryAck.of("fridge-7", "e", [1])[0].to_json()
    for _ in range(3):  # the same bug three times: each message dropped, the loop goes on
        t.inbox.put(Received(topics.acks("fridge-7"), ack, mid=1, qos=1))
        a.step()
    t.inbox.put(Received(topics.commands("fridge-7"), b"{not json"))  # the next message is still handled
    a.step()
    assert a.guard.count == 3 and a.malformed == 4
    codes = [e.code for e in errors(t, "fridge-7")]
    assert codes.count("internal_error") == 3 and codes[-1] == "malformed_message"
    assert len(_tracebacks(caplog)) == 1  # once per code location, not per occurrence


def test_a_bug_met_by_a_local_api_request_is_answered_and_the_next_served(
        tmp_path: Path, world: dict[str, object], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, t = _agent(tmp_path, world)
    a.firmware.start()
    try:
        def broken(*args: Any) -> NoReturn:
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(a.firmware, "status", broken)
        client = LineClient(a.config.socket_path)
        for n in range(2):
            client.send(type="status", id=f"st{n}")
            answer = client.read_until(lambda m, n=n: m.get("id") == f"st{n}", a.step)  # type: ignore[misc]
            assert answer["type"] == "error" and answer["code"] == "internal_error"
            assert "RecursionError" in answer["message"]
        client.send(type="infer", id="next", mode="now")  # the next request is served
        answer = client.read_until(lambda m: m.get("id") == "next", a.step)
        assert answer["type"] == "error" and answer["code"] == "no_result"
        client.close()
    finally:
        a.firmware.stop()
    assert a.guard.count == 2 and len(_tracebacks(caplog)) == 1
    assert [e.code for e in errors(t, "fridge-7")].count("internal_error") == 2


def test_a_bug_met_by_an_inference_tick_answers_its_waiters_and_the_next_tick_runs(
        tmp_path: Path, world: dict[str, object], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, t = _agent(tmp_path, world, trigger="on_request")
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    real, calls = a.infer_once, []

    def first_fails() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("cv2.error: (-215:Assertion failed) !_src.empty()")
        return real()

    monkeypatch.setattr(a, "infer_once", first_fails)
    a.firmware.start()
    try:
        client = LineClient(a.config.socket_path)
        client.send(type="infer", id="door-1", mode="next_frame")
        failed = client.read_until(lambda m: m.get("id") == "door-1", a.step)
        assert failed["type"] == "error" and failed["code"] == "no_result" and "ValueError" in failed["message"]
        client.send(type="infer", id="door-2", mode="next_frame")
        result = client.read_until(lambda m: m.get("id") == "door-2", a.step)
        assert result["type"] == "result" and a.window.inferences == 1
        client.close()
    finally:
        a.firmware.stop()
    assert len(calls) == 2 and a.guard.count == 1 and len(_tracebacks(caplog)) == 1
    assert "internal_error" in [e.code for e in errors(t, "fridge-7")]


def test_a_bug_in_a_window_close_or_the_uplink_does_not_stop_the_loop(
        agent: tuple[Agent, MemoryTransport], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = agent

    def broken() -> NoReturn:
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(a, "close_window", broken)
    monkeypatch.setattr(a, "publish_pending", broken)
    a.window_started = 0.0
    a.step()
    assert a.guard.count == 2  # both units failed, each on its own; the step returned


def test_a_deploy_step_that_raises_unexpectedly_fails_its_job_with_the_reason(
        agent: tuple[Agent, MemoryTransport], world: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    a, t = agent
    a.handle(Connected())

    def broken(*args: Any) -> NoReturn:
        raise KeyError("input_shape")

    monkeypatch.setattr(a.deployer, "_verify", broken)
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    last = job_events(t, "fridge-7", "job-9")[-1]
    assert last.state is JobState.FAILED and "KeyError" in (last.reason or "")
    record = a.deployer.jobs.get("job-9")
    assert record is not None and record.state is JobState.FAILED
    assert a.guard.count == 1


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_still_stop_the_loop(agent: tuple[Agent, MemoryTransport],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 stop: type[BaseException]) -> None:
    a, _ = agent

    def stopped() -> NoReturn:
        raise stop()

    monkeypatch.setattr(a, "publish_pending", stopped)
    with pytest.raises(stop):
        a.run(until=float("inf"))
    assert a.guard.count == 0
