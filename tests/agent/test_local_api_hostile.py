"""The local API against an attacker or a careless firmware with access to the socket
(docs/firmware.md, "Limits"): every bad input gets an error naming what is wrong and is counted;
nothing makes the agent read without bound, block, decode a bomb or lose an answer."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.errors import FrameError, LocalApiError
from agent.frames import FolderSource, decode
from agent.local_api import LocalServer
from agent.loop import Agent
from benchmarks.faults.device import errors
from contract.local import InferResult, Item, OkAnswer
from examples.fridge.synth import write_dataset
from tests.agent.conftest import MemoryTransport
from tests.agent.test_local_api import LineClient
from tests.waiting import until
from transport.client import Connected


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    s = LocalServer(tmp_path / "api.sock", client_queue=8)
    s.start()
    yield s
    s.stop()


def test_a_number_too_long_to_convert_is_refused_and_the_connection_stays(server: LocalServer) -> None:
    """json.loads raises a bare ValueError (not JSONDecodeError) for an integer of more than 4300
    digits: it escaped the decoder, and the server dropped the client as if it had met a bug."""
    client = LineClient(server.path)
    client.sock.sendall(b'{"schema_version":1,"type":"hold_activation","id":"h1","reason":"x","max_s":'
                        + b"9" * 5000 + b"}\n")
    answer = client.read()
    assert answer["type"] == "error" and answer["code"] == "bad_request" and "digits" in answer["message"]
    client.sock.sendall('{"schema_version":1,"type":"status","id":"s1"}'.encode("utf-16") + b"\n")
    assert "UTF-8" in client.read()["message"]  # json.loads guesses UTF-16 from bytes; the protocol is UTF-8
    client.send(type="status", id="after")
    _, request = server.requests.get(timeout=10)
    assert request.id == "after"
    assert server.refused == {"bad_request": 2}


def test_a_pipelining_client_is_paused_and_loses_no_answer_nor_starves_another(server: LocalServer) -> None:
    """One client writing 300 requests without reading filled the queue every client shares (256):
    the others were answered ``busy``, and its own answers beyond its queue of 8 were dropped."""
    greedy, polite = LineClient(server.path), LineClient(server.path)
    greedy.sock.sendall(b"".join(b'{"schema_version":1,"type":"status","id":"g%d"}\n' % i for i in range(300)))
    until(lambda: server.requests.qsize() >= 256 or any(c.paused for c in list(server.clients.values())),
          "the server to stop taking the greedy client's requests")
    polite.send(type="status", id="p1")
    taken: list[str] = []
    got: list[str] = []

    def pump() -> bool:  # the agent's part: answer what is queued; the greedy client reads now and then
        while not server.requests.empty():
            client, request = server.take()
            taken.append(request.id)
            server.answer(client, OkAnswer(id=request.id))
        greedy.sock.settimeout(0.0)
        with contextlib.suppress(BlockingIOError):
            greedy.buffer += greedy.sock.recv(65536)
        greedy.sock.settimeout(30)
        while b"\n" in greedy.buffer:
            got.append(greedy.read()["id"])
        return len(got) == 300

    until(pump, "every answer of the greedy client", 60)
    assert got == [f"g{i}" for i in range(300)]  # all of them, in order, none dropped
    assert polite.read()["id"] == "p1"
    assert "p1" in taken and taken.index("p1") < 20  # served among the first, not after the greedy 300
    assert all(c.dropped == 0 for c in server.clients.values())


def test_running_out_of_file_descriptors_pauses_accepting_and_kills_nothing(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """accept() failing with EMFILE (the process has no descriptor left) escaped the selector
    thread: the local API died for good, silently."""
    import socket

    failures = [OSError(errno.EMFILE, "Too many open files")]

    class Exhausted(socket.socket):
        def accept(self) -> tuple[socket.socket, Any]:
            if failures:
                raise failures.pop()
            return super().accept()

    monkeypatch.setattr(socket, "socket", Exhausted)
    s = LocalServer(tmp_path / "api.sock")
    s.start()
    try:
        client = LineClient(s.path)  # its connection waits in the backlog while accept fails
        client.send(type="status", id="later")
        _, request = s.requests.get(timeout=20)  # accepted once the server listens again (1 s)
        assert request.id == "later" and s.refused["accept_failed"] == 1 and not failures
    finally:
        s.stop()


def test_a_subscriber_that_never_reads_holds_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    """The outgoing queue was bounded in lines only: 256 results of a detector with 1000 boxes
    (~70 kB each) held 17 MB per silent subscriber."""
    from agent.local_api import OUT_BYTES

    s = LocalServer(tmp_path / "api.sock")  # client_queue 256 lines, the default
    s.start()
    try:
        silent = LineClient(s.path)
        silent.send(type="subscribe", id="s", topics=["results"])
        client, request = s.requests.get(timeout=10)
        s.subscribe(client, frozenset(request.topics))  # type: ignore[union-attr]
        s.answer(client, OkAnswer(id="s"))
        items = [Item(label=f"label-{i}", score=0.5, box=[12.5, 40.0, 88.0, 210.25]) for i in range(1000)]
        result = InferResult(source="main", bundle=None, items=items, inventory={}, model_ms=1.0, total_ms=2.0)
        for _ in range(256):  # ~70 kB each
            s.publish("results", result)
        queued = sum(len(line) for line in client.out)
        assert queued <= OUT_BYTES + 4096 and client.dropped > 0, (queued, client.dropped)
    finally:
        s.stop()


def test_stop_never_deletes_a_file_that_took_the_sockets_place(tmp_path: Path) -> None:
    s = LocalServer(tmp_path / "api.sock")
    s.start()
    s.path.unlink()
    s.path.write_text("the installer's file")
    s.stop()
    assert s.path.read_text() == "the installer's file"


def test_a_socket_in_a_directory_anyone_may_write_is_refused(tmp_path: Path) -> None:
    """Anyone could swap the socket for a symlink between bind and chmod (chmod follows it) or
    take its place: the agent refuses such a directory, unless it has the sticky bit (like /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(LocalApiError, match="others may write"):
        LocalServer(shared / "api.sock").start()
    assert not (shared / "api.sock").exists()
    shared.chmod(0o1777)
    sticky = LocalServer(shared / "api.sock")
    sticky.start()
    sticky.stop()


# ---- images that must not be decoded -----------------------------------------------------------
def _jpeg(width: int, height: int) -> bytes:
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bombs() -> dict[str, bytes]:
    jpeg = _jpeg(20000, 20000)
    bmp_header = struct.pack("<IiiHHIIiiII", 40, 30000, -30000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (29999).to_bytes(3, "little") * 2
    return {
        "jpeg with a fill byte before its markers": jpeg[:2] + b"\xff" + jpeg[2:],
        "jpeg with bytes between segments": jpeg[:2] + b"\x00\x00" + jpeg[2:],
        "bmp": b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + bmp_header + b"\0" * 64,
        "webp": b"RIFF" + struct.pack("<I", 4 + len(vp8x) + 64) + b"WEBP" + vp8x + b"\0" * 64,
        "ppm (no size check: not accepted)": b"P6\n30000 30000\n255\n" + b"\0" * 64,
    }


@pytest.mark.parametrize("name", list(_bombs()))
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(name: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A 700-byte JPEG with one fill byte (0xFF, legal before a marker) hid its 20000x20000 size
    from the header check: OpenCV decoded it, 2.35 GB resident and 3.2 s in the agent loop."""
    import cv2

    decoded: list[int] = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(FrameError) as refused:
        decode(_bombs()[name], 4096 * 4096)
    assert refused.value.kind in ("too_large", "format") and not decoded, (refused.value, decoded)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_ordinary_images_of_each_accepted_format_decode(ext: str) -> None:
    import cv2
    import numpy as np

    image = np.full((48, 64, 3), 120, np.uint8)
    frame = decode(cv2.imencode(ext, image)[1].tobytes(), 4096 * 4096)
    assert frame.shape[:2] == (48, 64)
    with pytest.raises(FrameError, match="above the limit"):
        decode(cv2.imencode(ext, image)[1].tobytes(), 64 * 47)


# ---- the agent behind the socket -------------------------------------------------------------------
def _agent(tmp_path: Path, world: dict[str, object], **local_api: Any) -> tuple[Agent, MemoryTransport]:
    root: Path = world["root"]  # type: ignore[assignment]
    frames = tmp_path / "frames"
    write_dataset(frames, 2, seed=9)
    config = AgentConfig.model_validate({
        "device_id": "fridge-7", "groups": ["eu"], "data_dir": tmp_path / "data",
        "trusted_keys": [root / "keys" / "ops.pub"], "source": {"location": str(frames)},
        "local_api": {"socket": tmp_path / "a.sock", **local_api}})
    transport = MemoryTransport()
    a = Agent(config, transport, FolderSource(frames))
    a.handle(Connected())
    return a, transport


class Running:
    """The agent loop stepping in a thread, so a request that blocks it shows as a missing answer."""

    def __init__(self, a: Agent) -> None:
        self.agent, self.stop = a, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.agent.step()

    def ask(self, client: LineClient, **fields: Any) -> dict[str, Any]:
        client.send(**fields)
        client.sock.settimeout(10)
        try:
            return client.read()
        except TimeoutError:
            return {"type": "no answer within 10 s"}


@pytest.fixture
def running(tmp_path: Path, world: dict[str, object]) -> Iterator[Running]:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    a, _ = _agent(tmp_path, world, image_dirs=[shelf, "/dev"])
    a.firmware.start()
    r = Running(a)
    r.thread.start()
    yield r
    r.stop.set()
    for fifo in shelf.glob("*.fifo"):  # a loop blocked opening a FIFO (before the fix) is let go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    r.thread.join(timeout=30)
    a.firmware.stop()


def test_image_path_outside_the_allowed_folders_is_refused(tmp_path: Path, world: dict[str, object]) -> None:
    """Whoever may open the socket made the agent open any file it can read (its keys, /etc/shadow
    as root): the answer told whether it exists and how big it is."""
    a, _ = _agent(tmp_path, world)  # no image_dirs: image_path is off
    a.firmware.start()
    try:
        (tmp_path / "secret.key").write_bytes(b"k" * 100)
        client = LineClient(a.config.socket_path)
        client.send(type="infer", id="i1", mode="image", image_path=str(tmp_path / "secret.key"))
        answer = client.read_until(lambda m: m.get("id") == "i1", a.step)
        assert answer["code"] == "image_path_refused" and answer["field"] == "image_path"
        assert "local_api.image_dirs" in answer["message"]
    finally:
        a.firmware.stop()


def test_image_paths_that_are_no_plain_file_are_refused_without_reading(running: Running, tmp_path: Path) -> None:
    """/dev/zero (st_size 0) was read until memory ran out; a FIFO blocked the agent loop for good."""
    shelf = tmp_path / "shelf"
    os.mkfifo(shelf / "door.fifo")
    (shelf / "folder").mkdir()
    (shelf / "mem.jpg").symlink_to("/proc/self/mem")
    (tmp_path / "huge.jpg").write_bytes(b"")
    os.truncate(tmp_path / "huge.jpg", 10**12)  # sparse: 1 TB
    (shelf / "huge.jpg").symlink_to(tmp_path / "huge.jpg")
    (shelf / "big.jpg").write_bytes(b"")
    os.truncate(shelf / "big.jpg", 10**9)
    client = LineClient(running.agent.config.socket_path)
    expected = {"door.fifo": "not a regular file", "folder": "not a regular file", "/dev/zero": "not a regular file",
                "mem.jpg": "outside", "huge.jpg": "outside", "big.jpg": "bytes, above"}
    for i, (name, why) in enumerate(expected.items()):
        answer = running.ask(client, type="infer", id=f"i{i}", mode="image", image_path=str(shelf / name))
        assert answer.get("id") == f"i{i}" and answer["type"] == "error" and why in answer["message"], (name, answer)
        assert answer["field"] == "image_path"
    assert running.agent.firmware.server is not None
    assert running.agent.firmware.server.refused["image_path_refused"] == 5


def test_a_folder_swapped_for_a_symlink_after_the_check_leads_nowhere(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: shelf/sub passed the check as a folder, then became a symlink out of the shelf
    (whoever writes the image folder can do it). Opening the whole path followed it."""
    import agent.image_files as image_files

    shelf, outside = tmp_path / "shelf", tmp_path / "outside"
    shelf.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"the agent's secret")
    (shelf / "sub").symlink_to(outside)
    monkeypatch.setattr(image_files.os.path, "realpath", str)  # the check saw shelf/sub as a plain folder
    with pytest.raises(image_files.ImagePathRefused, match="changed while it was opened"):
        image_files.read_image_file(str(shelf / "sub" / "secret.jpg"), [shelf], 1000)


def test_next_frame_waiters_of_clients_gone_are_forgotten(tmp_path: Path, world: dict[str, object]) -> None:
    """With an interval source, next_frame requests wait for the schedule's next read: clients that
    connect, ask and leave piled up in that list until then, without bound."""
    a, _ = _agent(tmp_path, world)
    a.next_inference = float("inf")  # the schedule's next read is far away
    a.firmware.start()
    try:
        server = a.firmware.server
        assert server is not None
        for i in range(50):
            client = LineClient(a.config.socket_path)
            client.send(type="infer", id=f"n{i}", mode="next_frame")
            until(lambda: server.requests.qsize() == 1, "the request to be queued")
            client.close()
            until(lambda: not server.clients, "the client to be gone")
            a.firmware.serve()
        assert len(a.firmware.next_frame) <= 1
    finally:
        a.firmware.stop()


def test_release_without_a_hold_is_refused_and_opens_no_window(tmp_path: Path, world: dict[str, object]) -> None:
    """A release with no hold answered ok and let a READY candidate activate outside its window."""
    a, _ = _agent(tmp_path, world)
    a.firmware.start()
    try:
        client = LineClient(a.config.socket_path)
        client.send(type="release_activation", id="r1")
        answer = client.read_until(lambda m: m.get("id") == "r1", a.step)
        assert answer["type"] == "error" and answer["code"] == "release_activation_refused"
        assert "no activation hold" in answer["message"]
        assert a.activation.released_at is None
    finally:
        a.firmware.stop()


def test_refusals_are_counted_in_status_and_reported_to_the_cloud(tmp_path: Path, world: dict[str, object]) -> None:
    a, t = _agent(tmp_path, world)
    a.firmware.start()
    try:
        client = LineClient(a.config.socket_path)
        for _ in range(3):
            client.sock.sendall(b"{not json\n")
        client.send(type="status", id="st")
        status = client.read_until(lambda m: m.get("id") == "st", a.step)
        assert status["refused"] == {"bad_request": 3}
        (event,) = [e for e in errors(t, "fridge-7") if e.code == "local_api_refused"]
        assert "3" in event.message and "bad_request" in event.message
    finally:
        a.firmware.stop()


def test_invalid_utf8_is_refused_naming_it(server: LocalServer) -> None:
    client = LineClient(server.path)
    client.sock.sendall(b"\xff\xfe\xfd\n")  # not UTF-8
    answer = client.read()
    assert answer["code"] == "bad_request" and "UTF-8" in answer["message"]
    client.send(type="status", id="still-up")
    _, request = server.requests.get(timeout=10)
    assert request.id == "still-up"
