"""The local API for the firmware (docs/firmware.md): the socket server on its own, then an agent
answering over it while the test drives its loop step by step."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.errors import LocalApiError
from agent.frames import FolderSource
from agent.local_api import LocalServer
from agent.loop import Agent
from benchmarks.faults.device import errors
from contract import topics
from contract.local import ErrorAnswer, StatusRequest
from contract.telemetry import Telemetry
from examples.fridge.synth import write_dataset
from tests.agent.conftest import MemoryTransport, deliver
from tests.waiting import until
from transport.client import Connected, Wake


class LineClient:
    """What a firmware does: connect, write request lines, read answer lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(30)
        self.buffer = b""

    def send(self, **fields: Any) -> None:
        self.sock.sendall(json.dumps({"schema_version": 1, **fields}).encode() + b"\n")

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the agent closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def read_until(self, found: Callable[[dict[str, Any]], bool], on_wait: Callable[[], None] = lambda: None,
                   limit: int = 200) -> dict[str, Any]:
        """Lines until one is ``found``; ``on_wait`` runs while nothing is readable (an agent step)."""
        for _ in range(limit):
            self.sock.settimeout(0.0)
            try:
                chunk = self.sock.recv(65536)
                self.buffer += chunk
            except BlockingIOError:
                pass
            finally:
                self.sock.settimeout(30)
            while b"\n" in self.buffer:
                message = self.read()
                if found(message):
                    return message
            on_wait()
        raise AssertionError("the expected message never came")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = LocalServer(tmp_path / "api.sock", client_queue=8)
    s.start()
    yield s
    s.stop()


def test_the_socket_is_group_accessible_only(server: LocalServer) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


def test_a_bad_line_is_answered_with_its_field_and_the_connection_stays(server: LocalServer) -> None:
    client = LineClient(server.path)
    client.send(type="infer", id="r1", mode="soon")
    answer = client.read()
    assert answer["type"] == "error" and answer["field"] == "mode" and answer["id"] == "r1"
    client.sock.sendall(b"{not json\n")
    assert client.read()["field"] is None
    client.send(type="status", id="r2")  # the same connection still works
    _, request = server.requests.get(timeout=10)
    assert isinstance(request, StatusRequest) and request.id == "r2"
    assert server.refused == {"bad_request": 2}


def test_an_overlong_line_is_refused_and_skipped_to_its_end(tmp_path: Path) -> None:
    s = LocalServer(tmp_path / "api.sock", line_limit=1000)
    s.start()
    try:
        client = LineClient(s.path)
        client.sock.sendall(b'{"x": "' + b"a" * 5000)
        assert client.read()["code"] == "line_too_long"
        client.sock.sendall(b"a" * 3000 + b'"}\n')  # the rest of the long line: skipped, not parsed
        client.send(type="status", id="after")
        _, request = s.requests.get(timeout=10)
        assert request.id == "after" and s.refused == {"line_too_long": 1}
    finally:
        s.stop()


def test_a_slow_client_loses_lines_counted_and_never_blocks_the_others(server: LocalServer) -> None:
    slow, fast = LineClient(server.path), LineClient(server.path)
    for client, topic in ((slow, "results"), (fast, "results")):
        client.send(type="subscribe", id="s", topics=[topic])
    until(lambda: server.requests.qsize() == 2, "both subscriptions queued")
    for _ in range(2):
        client, request = server.requests.get()
        server.subscribe(client, frozenset(request.topics))  # type: ignore[union-attr]
    big = "x" * 2000
    received = 0
    for batch in range(40):  # 40 x 8 lines of ~2 kB: far more than the slow client's queue and socket buffer
        for i in range(8):
            assert server.publish("results", ErrorAnswer(code="test", message=f"{batch}.{i} {big}")) == 2
        for _ in range(8):
            assert fast.read()["message"].startswith(f"{batch}.")  # the fast client gets every line, in order
            received += 1
    assert received == 320
    dropped = next(c.dropped for c in server.clients.values() if c.dropped)
    assert dropped > 0
    assert sum(c.dropped for c in server.clients.values()) == dropped  # only the slow one lost lines
    slow.close()
    fast.close()


def test_too_many_clients_are_told_so(tmp_path: Path) -> None:
    s = LocalServer(tmp_path / "api.sock", max_clients=1)
    s.start()
    try:
        first = LineClient(s.path)
        first.send(type="status", id="one")
        s.requests.get(timeout=10)  # the first is registered
        second = LineClient(s.path)
        assert second.read()["code"] == "too_many_clients"
    finally:
        s.stop()


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: an agent that died
    live = LocalServer(path)
    live.start()
    try:
        with pytest.raises(LocalApiError, match="already serves"):
            LocalServer(path).start()
    finally:
        live.stop()
    assert not path.exists()
    with pytest.raises(LocalApiError, match="longer than"):
        LocalServer(tmp_path / ("d" * 120) / "api.sock")


# ---- the agent behind the socket ------------------------------------------------------------------
def _agent(tmp_path: Path, world: dict[str, object], trigger: str = "interval") -> tuple[Agent, MemoryTransport]:
    root: Path = world["root"]  # type: ignore[assignment]
    frames = tmp_path / "frames"
    write_dataset(frames, 4, seed=9)
    config = AgentConfig.model_validate({
        "device_id": "fridge-7", "groups": ["eu"], "data_dir": tmp_path / "data",
        "trusted_keys": [root / "keys" / "ops.pub"], "source": {"location": str(frames), "trigger": trigger},
        "local_api": {"socket": tmp_path / "a.sock"}})
    transport = MemoryTransport()
    a = Agent(config, transport, FolderSource(frames))
    a.handle(Connected())
    return a, transport


@pytest.fixture
def served(tmp_path: Path, world: dict[str, object]) -> Any:
    a, t = _agent(tmp_path, world)
    a.firmware.start()
    yield a, t
    a.firmware.stop()


def test_infer_now_is_answered_with_its_request_id(served: tuple[Agent, MemoryTransport],
                                                   world: dict[str, object]) -> None:
    a, _ = served
    client = LineClient(a.config.socket_path)
    client.send(type="infer", id="before", mode="now")
    early = client.read_until(lambda m: m.get("id") == "before", a.step)
    assert early["type"] == "error" and early["code"] == "no_result" and "no active bundle" in early["message"]
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    client.send(type="infer", id="door-1", mode="now")
    result = client.read_until(lambda m: m.get("id") == "door-1", a.step)
    assert result["type"] == "result" and result["source"] == "main" and result["bundle"]["sequence"] == 5
    assert result["total_ms"] >= result["model_ms"] > 0
    assert {i["label"] for i in result["items"]} == set(result["inventory"])
    client.send(type="status", id="st")
    status = client.read_until(lambda m: m.get("id") == "st", a.step)
    assert status["device_id"] == "fridge-7" and status["connected"] and status["active"]["sequence"] == 5
    assert status["trigger"] == "interval" and status["slots"]


def test_subscribers_hear_results_model_changes_and_job_states(served: tuple[Agent, MemoryTransport],
                                                               world: dict[str, object]) -> None:
    a, _ = served
    client = LineClient(a.config.socket_path)
    client.send(type="subscribe", id="sub", topics=["results", "model", "jobs"])
    assert client.read_until(lambda m: m.get("id") == "sub", a.step)["type"] == "ok"
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    job = client.read_until(lambda m: m["type"] == "job" and m["state"] == "PROBATION", a.step)
    assert job["job_id"] == "job-9" and job["id"] is None
    model = client.read_until(lambda m: m["type"] == "model", a.step)
    assert model["active"]["sequence"] == 5 and model["previous_sha256"] is None
    a.next_inference = 0.0  # the schedule's turn: its result goes to subscribers, without a request id
    scheduled = client.read_until(lambda m: m["type"] == "result", a.step)
    assert scheduled["id"] is None and scheduled["bundle"]["sequence"] == 5


def test_the_firmware_holds_and_releases_activation_over_the_socket(served: tuple[Agent, MemoryTransport]) -> None:
    a, _ = served
    client = LineClient(a.config.socket_path)
    client.send(type="hold_activation", id="h", reason="defrost", max_s=60)
    answer = client.read_until(lambda m: m.get("id") == "h", a.step)
    assert answer["type"] == "ok"
    hold = a.activation.current_hold()
    assert hold is not None and hold.reason == "defrost"
    client.send(type="release_activation", id="r")
    assert client.read_until(lambda m: m.get("id") == "r", a.step)["type"] == "ok"
    assert a.activation.current_hold() is None

def test_on_request_infers_only_when_asked_and_telemetry_goes_on(tmp_path: Path, world: dict[str, object]) -> None:
    a, t = _agent(tmp_path, world, trigger="on_request")
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    a.firmware.start()
    try:
        for _ in range(5):
            a.next_inference = 0.0  # the schedule is due every step: on request, it reads nothing
            a.step()
        assert a.window.inferences == 0
        client = LineClient(a.config.socket_path)
        client.send(type="infer", id="door", mode="next_frame")
        result = client.read_until(lambda m: m.get("id") == "door", a.step)
        assert result["type"] == "result" and a.window.inferences == 1
        a.close_window()
        a.publish_pending()
        assert Telemetry.from_json(t.on(topics.telemetry("fridge-7"))[-1]).inferences == 1  # telemetry goes on
    finally:
        a.firmware.stop()


def test_a_request_wakes_the_loop_from_its_wait_for_mqtt(served: tuple[Agent, MemoryTransport]) -> None:
    """The loop waits up to 50 ms on the MQTT inbox: a request puts a Wake there, so it is answered at once
    (infer now round trip p50 went from 43 ms to 1.7 ms on the fridge bundle)."""
    a, t = served
    client = LineClient(a.config.socket_path)
    client.send(type="status", id="st")
    assert isinstance(t.inbox.get(timeout=10), Wake)
    a.step()  # one turn answers it
    assert client.read()["id"] == "st"


def test_a_bug_met_by_one_client_drops_that_client_only(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.local_api as local_api

    real = local_api.decode_request

    def fragile(line: bytes | str) -> Any:
        if b"boom" in (line if isinstance(line, bytes) else line.encode()):
            raise RuntimeError("a bug")
        return real(line)

    monkeypatch.setattr(local_api, "decode_request", fragile)
    victim, other = LineClient(server.path), LineClient(server.path)
    victim.send(type="status", id="boom")
    assert victim.sock.recv(10) == b""  # closed by the server
    other.send(type="status", id="fine")
    _, request = server.requests.get(timeout=10)
    assert request.id == "fine" and len(server.clients) == 1


def test_an_agent_whose_socket_cannot_open_runs_on_and_says_why(tmp_path: Path, world: dict[str, object]) -> None:
    a, t = _agent(tmp_path, world)
    a.config.socket_path.write_text("not a socket")  # e.g. a path the firmware's installer got wrong
    a.firmware.start()
    assert a.firmware.server is None
    (event,) = [e for e in errors(t, "fridge-7") if e.code == "local_api_unavailable"]
    assert "is not a socket" in event.message
    a.step()  # the loop goes on
    a.firmware.stop()


def test_an_agent_whose_socket_path_is_too_long_runs_on_and_says_why(tmp_path: Path,
                                                                     world: dict[str, object]) -> None:
    """Found by the fault harness in CI: a data directory deep in a temporary folder gave a socket
    path over the 107-byte limit, the server's constructor raised outside the guard, and the agent's
    thread died before it came online."""
    a, t = _agent(tmp_path, world)
    long = tmp_path / ("d" * 120) / "agent.sock"
    a.config = a.config.model_copy(update={"local_api": a.config.local_api.model_copy(update={"socket": long})})
    a.firmware.start()
    assert a.firmware.server is None
    (event,) = [e for e in errors(t, "fridge-7") if e.code == "local_api_unavailable"]
    assert "longer than" in event.message
    a.step()
    a.firmware.stop()


def test_status_names_why_the_broker_is_unreachable(served: tuple[Agent, MemoryTransport]) -> None:
    """Found running the agent on a wrong broker port: `status` over the socket said `connected: false`
    and `last_error: null` while the agent logged the refused connection every few seconds."""
    from transport.client import ConnectFailed, Disconnected

    a, _ = served
    a.handle(Disconnected("keepalive timeout", 1.0))
    a.handle(ConnectFailed("ConnectionRefusedError: [Errno 111] Connection refused (127.0.0.1:1884)", 2.0))
    client = LineClient(a.config.socket_path)
    client.send(type="status", id="st")
    status = client.read_until(lambda m: m.get("id") == "st", a.step)
    assert status["connected"] is False
    assert status["last_error"].startswith("broker_unreachable: ConnectionRefusedError"), status


def test_on_request_reports_a_missing_camera_before_the_firmware_asks(tmp_path: Path,
                                                                      world: dict[str, object]) -> None:
    """Found running `agent run` with `trigger = "on_request"` and no camera: nothing was reported (no log
    line, no event, health.json "not opened yet") until the firmware's first infer request."""
    from agent.health import reopening

    a, t = _agent(tmp_path, world, trigger="on_request")
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    a.source = reopening("folder", str(tmp_path / "not-mounted"), True, 10_000_000)
    for _ in range(3):
        a.next_inference = 0.0  # the schedule's turn: nothing is read, but the source is checked
        a.step()
    assert a.window.inferences == 0
    (event,) = [e for e in errors(t, "fridge-7") if e.code == "source_unavailable"]
    assert "not-mounted" in event.message
    assert json.loads((a.config.data_dir / "health.json").read_text())["source"].startswith("unavailable")


def test_a_hold_is_answered_with_when_it_ends_in_words(served: tuple[Agent, MemoryTransport]) -> None:
    """Found holding activation over the socket: the `ok` answer's detail was `1796158545.9805079`, a Unix
    time as a string that a firmware engineer had to guess the meaning of."""
    from datetime import datetime

    a, _ = served
    client = LineClient(a.config.socket_path)
    client.send(type="hold_activation", id="h", reason="defrost", max_s=3600)
    answer = client.read_until(lambda m: m.get("id") == "h", a.step)
    assert answer["type"] == "ok" and answer["detail"].startswith("activation held until "), answer
    hold = a.activation.current_hold()
    assert hold is not None
    until_text = answer["detail"].removeprefix("activation held until ").split(" ")[0]
    assert abs(datetime.fromisoformat(until_text).timestamp() - hold.until) < 1, answer


def test_next_frame_on_request_is_answered_in_the_turn_the_request_wakes(tmp_path: Path,
                                                                          world: dict[str, object]) -> None:
    """Found timing `infer next_frame` with `trigger = "on_request"`: 53 ms every time against 1.5 ms for
    `now`. The request's Wake ended the loop's turn, and the frame was read only after the next turn's
    50 ms wait for MQTT traffic."""
    a, t = _agent(tmp_path, world, trigger="on_request")
    deliver(a, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    a.firmware.start()
    try:
        a.step()  # nothing due is left over from the delivery
        client = LineClient(a.config.socket_path)
        client.send(type="infer", id="door", mode="next_frame")
        until(lambda: not t.inbox.empty(), "the request's wake")
        a.step()  # one turn answers it (no other turn runs while the client waits for the line)
        answer = client.read()
        assert answer["id"] == "door" and answer["type"] == "result", answer
    finally:
        a.firmware.stop()


def test_on_request_loads_the_active_bundle_before_the_first_request(tmp_path: Path,
                                                                     world: dict[str, object]) -> None:
    """Found timing the first `infer` after `agent run` with `trigger = "on_request"`: 118-1104 ms against
    2 ms for the next ones, the first door-close paying for the runtime's import and the model's load."""
    installed, _ = _agent(tmp_path, world, trigger="on_request")
    deliver(installed, world["bundles"][5], 5, "job-9")  # type: ignore[index]
    installed.spool.close()
    a = Agent(installed.config, MemoryTransport(), FolderSource(tmp_path / "frames"))  # restarted, no broker yet
    assert a.models.loaded is None  # starting loads no model
    a.next_inference = 0.0
    a.step()  # the schedule's turn reads no frame, but has the active bundle ready
    assert a.window.inferences == 0
    loaded = a.models.loaded
    assert loaded is not None and loaded.sha256 == world["bundles"][5].ref.sha256  # type: ignore[index]
