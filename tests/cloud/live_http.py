"""A real uvicorn server on 127.0.0.1 in a thread, an ASGI wrapper that counts the request-body
bytes the server handed to the application, and a raw-socket client that streams a body from a
generator and stops as soon as the server answers (so a test can tell how much was read)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from cloud.broker import free_port
from tests.waiting import until


class CountingApp:
    """Outermost ASGI layer: counts the body bytes each ``receive`` returned, per request."""

    def __init__(self, app: Any) -> None:
        self.app, self.received = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn over a real socket; yield its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="test-uvicorn")
    thread.start()
    try:
        until(lambda: server.started or not thread.is_alive(), "uvicorn listening", timeout=20)
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return len(body) >= (int(lengths[0]) if lengths else 0)


@dataclass
class Body:
    """``total`` bytes in pieces of ``piece``; ``consumed`` counts what the client took from it."""

    total: int
    piece: int = 64 * 1024
    chunked: bool = False
    consumed: int = field(default=0, init=False)

    def pieces(self) -> Iterator[bytes]:
        while self.consumed < self.total:
            data = b"x" * min(self.piece, self.total - self.consumed)
            self.consumed += len(data)
            yield (f"{len(data):x}\r\n".encode() + data + b"\r\n") if self.chunked else data
        if self.chunked:
            yield b"0\r\n\r\n"


def post_streaming(port: int, path: str, body: Body, headers: dict[str, str] | None = None,
                   timeout: float = 60.0) -> tuple[int, bytes]:
    """POST ``body`` piece by piece over a raw socket until the server answers or closes; return the
    status and the response bytes read (0 if the server closed without answering)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if body.chunked else f"Content-Length: {body.total}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    pending = ("\r\n".join(lines) + "\r\n\r\n").encode()
    pieces, answer, deadline = body.pieces(), b"", time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        while not _complete(answer):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer after {timeout} s; {body.consumed} body bytes sent")
            if not pending:
                pending = next(pieces, b"")
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], left)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    pending = pending[sock.send(pending):]
                except (BrokenPipeError, ConnectionResetError):
                    pending = b""
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        return status, answer
