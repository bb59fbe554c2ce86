"""The local API's socket: a Unix-domain socket server speaking newline-delimited JSON.

One selector thread accepts clients, reads their lines and writes what is queued for them. It
never runs the model: a valid request goes into ``requests`` (a thread-safe queue the agent loop
drains each step, ``agent/firmware.py``); a bad line is answered at once with an error naming the
field, and the connection stays up. Each client has a bounded outgoing queue: when a client reads
too slowly, what does not fit is dropped and counted (``Client.dropped``), so a slow client never
stalls inference or the other clients.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import stat
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError
from contract.base import Message
from contract.local import MAX_LINE_BYTES, ErrorAnswer, Request, RequestError, Topic, decode_request

log = logging.getLogger("coldchain.agent.local_api")
MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL
REQUESTS_LIMIT = 256  # requests waiting for the agent loop, from every client together


class LocalApiError(AgentError):
    """The local API's socket cannot be opened (a path too long, another agent already serving it)."""


@dataclass(eq=False)
class Client:
    number: int
    sock: socket.socket
    limit: int
    inbuf: bytearray = field(default_factory=bytearray)
    out: deque[bytes] = field(default_factory=deque)
    sending: memoryview | None = None  # the part of the line being written that the socket did not take yet
    topics: frozenset[Topic] = frozenset()
    dropped: int = 0  # lines that did not fit in ``out``
    discarding: bool = False  # inside an overlong line: skip to its end


Incoming = tuple[Client, Request]


class LocalServer:
    """``start()`` binds ``path`` (mode ``mode``) and serves it from one thread until ``stop()``."""

    def __init__(self, path: Path, mode: int = 0o660, client_queue: int = 256, max_clients: int = 16,
                 line_limit: int = MAX_LINE_BYTES, on_request: Callable[[], None] = lambda: None) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise LocalApiError(f"local API socket path {path} is longer than {MAX_SOCKET_PATH} bytes: "
                                "set local_api.socket to a shorter path")
        self.path, self.mode, self.client_queue, self.max_clients = path, mode, client_queue, max_clients
        self.line_limit, self.on_request = line_limit, on_request  # on_request: wakes whoever drains requests
        self.requests: queue.Queue[Incoming] = queue.Queue(REQUESTS_LIMIT)
        self.clients: dict[int, Client] = {}
        self.refused = 0  # bad lines answered with an error
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._numbers = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, self.mode)
            listener.listen(8)
        except OSError as exc:
            listener.close()
            raise LocalApiError(f"cannot serve the local API on {self.path}: {exc.strerror or exc}") from exc
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="local-api", daemon=True)
        self._thread.start()
        log.info("local API listening on %s", self.path)

    def _remove_stale(self) -> None:
        """A socket file left by an agent that died is removed; one another agent serves is not."""
        try:
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise LocalApiError(f"{self.path} exists and is not a socket: refusing to replace it")
        except FileNotFoundError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # nobody listens: stale
            return
        finally:
            probe.close()
        raise LocalApiError(f"another process already serves the local API on {self.path}")

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for client in self.clients.values():
                client.sock.close()
            self.clients.clear()
        if self._listener is not None:
            self._listener.close()
            self.path.unlink(missing_ok=True)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- what the agent calls (any thread) ---------------------------------------------------
    def send(self, client: Client, message: Message) -> None:
        """Queue one line for ``client``; dropped (and counted) when its queue is full."""
        line = message.to_json() + b"\n"
        with self._lock:
            if client.number not in self.clients:
                return
            if len(client.out) >= client.limit:
                client.dropped += 1
                return
            client.out.append(line)
        self._wake()

    def publish(self, topic: Topic, message: Message) -> int:
        """``message`` to every client subscribed to ``topic``; how many got it queued."""
        with self._lock:
            subscribers = [c for c in self.clients.values() if topic in c.topics]
        for client in subscribers:
            self.send(client, message)
        return len(subscribers)

    def subscribe(self, client: Client, topics: frozenset[Topic]) -> None:
        with self._lock:
            client.topics = topics

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already woken (the pair's buffer is full) or closed
            self._wake_w.send(b"\0")

    # ---- the selector thread ------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, events in self._selector.select(timeout=1.0):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self._serve_client(key.data, events)
            self._update_interest()

    def _serve_client(self, client: Client, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                self._read(client)
            if events & selectors.EVENT_WRITE and client.number in self.clients:
                self._write(client)
        except Exception:  # a bug met by one client's bytes: that client goes, the server and the others stay
            log.exception("local API client %d dropped", client.number)
            self._drop(client)

    def _accept(self) -> None:
        if self._listener is None:
            return
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self._numbers += 1
        client = Client(self._numbers, sock, self.client_queue)
        with self._lock:
            full = len(self.clients) >= self.max_clients
            if not full:
                self.clients[client.number] = client
        if full:
            refusal = ErrorAnswer(code="too_many_clients", message=f"the agent serves at most {self.max_clients} "
                                  "local API clients at once").to_json() + b"\n"
            with contextlib.suppress(OSError):
                sock.send(refusal)
            sock.close()
            return
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        while True:
            end = client.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[: end + 1]
            if client.discarding:
                client.discarding = False
            elif line.strip():
                self._line(client, line)
        if len(client.inbuf) > self.line_limit:  # no newline within the limit: refuse it, skip to its end
            client.inbuf.clear()
            if not client.discarding:
                client.discarding = True
                self.refused += 1
                self.send(client, ErrorAnswer(code="line_too_long", message=f"a request line is longer than "
                                              f"{self.line_limit} bytes; it is skipped up to its newline"))

    def _line(self, client: Client, line: bytes) -> None:
        try:
            request = decode_request(line)
        except RequestError as exc:
            self.refused += 1
            self.send(client, exc.answer())
            return
        try:
            self.requests.put_nowait((client, request))
        except queue.Full:
            self.send(client, ErrorAnswer(id=request.id, code="busy", message="the agent has "
                                          f"{REQUESTS_LIMIT} requests waiting; try again"))
            return
        self.on_request()

    def _write(self, client: Client) -> None:
        while True:
            if client.sending is None:
                with self._lock:
                    if not client.out:
                        return
                    client.sending = memoryview(client.out.popleft())
            try:
                sent = client.sock.send(client.sending)
            except BlockingIOError:
                return
            except OSError:
                self._drop(client)
                return
            client.sending = client.sending[sent:] if sent < len(client.sending) else None
            if client.sending is not None:
                return

    def _update_interest(self) -> None:
        with self._lock:
            clients = list(self.clients.values())
        for client in clients:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out or client.sending else 0)
            try:
                if self._selector.get_key(client.sock).events != wanted:
                    self._selector.modify(client.sock, wanted, client)
            except (KeyError, ValueError):
                pass

    def _drop(self, client: Client) -> None:
        with self._lock:
            self.clients.pop(client.number, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
