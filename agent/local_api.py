"""The local API's socket: a Unix-domain socket server speaking newline-delimited JSON.

One selector thread accepts clients, reads their lines and writes what is queued for them. It
never runs the model: a valid request goes into ``requests`` (a thread-safe queue the agent loop
takes from each step, ``agent/firmware.py``); a bad line is answered at once with an error naming
the field, and the connection stays up. Every error answered is counted by code (``refused``).

Memory is bounded per client, and no client can crowd out another: a client has at most
``PIPELINE`` requests waiting for their answer and ``MAX_IMAGE_BYTES`` of request lines waiting
for the loop; past either, or while its outgoing queue is full, the server stops reading from it
(the kernel's buffer then holds what it writes, and its writes block) until the loop catches up.
Answers to requests are never dropped. Events (``publish``) go to an outgoing queue bounded in lines
(``client_queue``) and bytes (``OUT_BYTES``): when a subscriber reads too slowly, what does not fit
is dropped and counted (``Client.dropped``), so a slow client never stalls inference or the others.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import socket_file
from contract.base import Message
from contract.local import MAX_IMAGE_BYTES, MAX_LINE_BYTES, ErrorAnswer, Request, RequestError, Topic, decode_request

log = logging.getLogger("coldchain.agent.local_api")
PIPELINE = 8  # requests of one client waiting for their answers before the server stops reading it
OUT_BYTES = 1024 * 1024  # event bytes queued for one client before further events are dropped


@dataclass(eq=False)
class Client:
    number: int
    sock: socket.socket
    limit: int
    inbuf: bytearray = field(default_factory=bytearray)
    out: deque[bytes] = field(default_factory=deque)
    sending: memoryview | None = None  # the part of the line being written that the socket did not take yet
    topics: frozenset[Topic] = frozenset()
    dropped: int = 0  # event lines that did not fit in ``out``
    discarding: bool = False  # inside an overlong line: skip to its end
    inflight: int = 0  # requests queued for the loop or waiting there (next_frame), not answered yet
    queued_bytes: int = 0  # size of this client's request lines in ``requests``
    out_bytes: int = 0  # size of the lines in ``out``

    @property
    def paused(self) -> bool:
        """Not read until the loop catches up (its requests) or the client does (its answers)."""
        return (self.inflight >= PIPELINE or self.queued_bytes >= MAX_IMAGE_BYTES or len(self.out) >= self.limit
                or self.out_bytes >= OUT_BYTES)


Incoming = tuple[Client, Request]


class LocalServer:
    """``start()`` binds ``path`` (mode ``mode``) and serves it from one thread until ``stop()``."""

    def __init__(self, path: Path, mode: int = 0o660, client_queue: int = 256, max_clients: int = 16,
                 line_limit: int = MAX_LINE_BYTES, on_request: Callable[[], None] = lambda: None) -> None:
        socket_file.check_length(path)
        self.path, self.mode, self.client_queue, self.max_clients = path, mode, client_queue, max_clients
        self.line_limit, self.on_request = line_limit, on_request  # on_request: wakes whoever drains requests
        self.requests: queue.Queue[Incoming] = queue.Queue(max_clients * PIPELINE)  # bounded by the pauses
        self.clients: dict[int, Client] = {}
        self.refused: Counter[str] = Counter()  # errors answered (bad lines, refused requests) by code
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._numbers = 0
        self._inode: tuple[int, int] | None = None  # the socket file this server bound
        self._accept_after = 0.0  # accept() failed (no file descriptor left): listen again after this

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        listener, self._inode = socket_file.bind(self.path, self.mode)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="local-api", daemon=True)
        self._thread.start()
        log.info("local API listening on %s", self.path)

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
            socket_file.remove_own(self.path, self._inode)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- what the agent calls (any thread) ---------------------------------------------------
    def take(self) -> Incoming:
        """The next request for the loop (``queue.Empty`` if none); its client may be read again."""
        client, request = self.requests.get_nowait()
        with self._lock:
            client.queued_bytes = max(client.queued_bytes - request_size(request), 0)
        self._wake()
        return client, request

    def answer(self, client: Client, message: Message) -> None:
        """Queue the answer to one of ``client``'s requests: never dropped (at most ``PIPELINE`` wait)."""
        self._queue(client, message, answer=True)

    def send(self, client: Client, message: Message) -> None:
        """Queue an event line for ``client``; dropped (and counted) when its queue is full."""
        self._queue(client, message, answer=False)

    def _queue(self, client: Client, message: Message, answer: bool) -> None:
        line = message.to_json() + b"\n"
        with self._lock:
            if isinstance(message, ErrorAnswer) and message.code != "no_result":
                self.refused[message.code] += 1
            if answer:
                client.inflight = max(client.inflight - 1, 0)
            if client.number not in self.clients:
                return
            if not answer and client.out and (len(client.out) >= client.limit
                                              or client.out_bytes + len(line) > OUT_BYTES):
                client.dropped += 1
                return
            client.out.append(line)
            client.out_bytes += len(line)
        self._wake()

    def publish(self, topic: Topic, message: Message) -> int:
        """``message`` to every client subscribed to ``topic``; how many got it queued."""
        with self._lock:
            subscribers = [c for c in self.clients.values() if topic in c.topics]
        for client in subscribers:
            self.send(client, message)
        return len(subscribers)

    def refusals(self) -> dict[str, int]:
        """A copy of ``refused`` (the socket thread adds to it under the lock)."""
        with self._lock:
            return dict(self.refused)

    def connected(self, client: Client) -> bool:
        return client.number in self.clients

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
        """Accept every client waiting (a burst of connections is answered, not left in the backlog)."""
        for _ in range(256):
            if self._listener is None:
                return
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # no file descriptor left in the process (EMFILE): stop listening a second
                log.error("local API cannot accept a client: %s", exc.strerror)
                with self._lock:
                    self.refused["accept_failed"] += 1
                self._selector.unregister(self._listener)
                self._accept_after = time.monotonic() + 1.0
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._numbers += 1
        client = Client(self._numbers, sock, self.client_queue)
        with self._lock:
            full = len(self.clients) >= self.max_clients
            if not full:
                self.clients[client.number] = client
            else:
                self.refused["too_many_clients"] += 1
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
        self._lines(client)

    def _lines(self, client: Client) -> None:
        """Handle the complete lines read, until the client must wait (``paused``)."""
        while not client.paused:
            end = client.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[: end + 1]
            if client.discarding:
                client.discarding = False
            elif line.strip():
                self._line(client, line)
        if len(client.inbuf) > self.line_limit and b"\n" not in client.inbuf:  # refuse it, skip to its end
            client.inbuf.clear()
            if not client.discarding:
                client.discarding = True
                self._refuse(client, ErrorAnswer(code="line_too_long", message=f"a request line is longer than "
                                                 f"{self.line_limit} bytes; it is skipped up to its newline"))

    def _refuse(self, client: Client, answer: ErrorAnswer) -> None:
        """An error for a line that never reached the loop; reading pauses while the client does not read."""
        with self._lock:
            client.inflight += 1
        self.answer(client, answer)

    def _line(self, client: Client, line: bytes) -> None:
        try:
            request = decode_request(line)
        except RequestError as exc:
            self._refuse(client, exc.answer())
            return
        size = request_size(request)
        with self._lock:
            client.inflight += 1
            client.queued_bytes += size
        try:
            self.requests.put_nowait((client, request))
        except queue.Full:  # cannot happen while every client pauses at PIPELINE: refused rather than lost
            with self._lock:
                client.queued_bytes -= size
            self.answer(client, ErrorAnswer(id=request.id, code="busy", message="the agent has too many "
                                            "requests waiting; try again"))
            return
        self.on_request()

    def _write(self, client: Client) -> None:
        while True:
            if client.sending is None:
                with self._lock:
                    if not client.out:
                        return
                    client.sending = memoryview(client.out.popleft())
                    client.out_bytes -= len(client.sending)
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
        """Read a client only while it is not paused (lines already read are handled when it resumes);
        write while something is queued for it."""
        if self._listener is not None and self._accept_after and time.monotonic() >= self._accept_after:
            self._accept_after = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ)
        with self._lock:
            clients = list(self.clients.values())
        for client in clients:
            if not client.paused and b"\n" in client.inbuf:
                try:
                    self._lines(client)
                except Exception:  # as in _serve_client: this client goes, the others stay
                    log.exception("local API client %d dropped", client.number)
                    self._drop(client)
                    continue
            wanted = (0 if client.paused else selectors.EVENT_READ) | \
                (selectors.EVENT_WRITE if client.out or client.sending else 0)
            try:
                key = self._selector.get_key(client.sock)
            except (KeyError, ValueError):
                key = None
            if not wanted:
                if key is not None:
                    self._selector.unregister(client.sock)
            elif key is None:
                self._selector.register(client.sock, wanted, client)
            elif key.events != wanted:
                self._selector.modify(client.sock, wanted, client)

    def _drop(self, client: Client) -> None:
        with self._lock:
            self.clients.pop(client.number, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()


def request_size(request: Request) -> int:
    """What a request holds in memory while it waits: its inline image, if any."""
    return len(getattr(request, "image_b64", None) or "")
