"""The HTTP API's gate, an ASGI middleware in front of everything else: the bearer token is checked
from the request's headers before any byte of its body is read (only the probes go without), a
declared ``Content-Length`` over the limit is refused unread (413), a streamed (chunked) body is
counted and cut off once past the limit (413), and an over-long URL is refused (414). A refused
request that announced a body closes the connection, so the server does not drain it either."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Collection
from typing import Any

log = logging.getLogger("coldchain.cloud.api")

MAX_BODY_BYTES = 1024 * 1024  # a request body (JSON) of at most 1 MiB
MAX_URL_BYTES = 8 * 1024  # path and query string together
Asgi = Callable[..., Any]


def token_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (over digests: not even the
    length of the token leaks)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest())


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _check(scope: dict[str, Any], token: str, open_paths: Collection[str], max_body: int) -> None:
    """Raise Refused for a request that must not reach the application (headers only)."""
    if len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b"")) > MAX_URL_BYTES:
        raise Refused(414, f"the URL is longer than {MAX_URL_BYTES} bytes")
    if scope["path"] not in open_paths and not token_matches(_header(scope, b"authorization"), token):
        raise Refused(401, "this route needs 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    length = _header(scope, b"content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(length) > max_body:
            raise Refused(413, f"the request body is larger than {max_body} bytes")


class Gate:
    """ASGI middleware; ``count(reason)`` is told about each refusal (``unauthorized``,
    ``too_large``, ...) and ``answered(method, route, status)`` about each response."""

    def __init__(self, app: Asgi, token: str, open_paths: Collection[str], max_body: int = MAX_BODY_BYTES,
                 count: Callable[[str], None] = lambda reason: None,
                 answered: Callable[[str, str, int], None] = lambda method, route, status: None) -> None:
        self.app, self.token, self.open_paths, self.max_body = app, token, frozenset(open_paths), max_body
        self.count, self.answered = count, answered

    async def __call__(self, scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        if scope["type"] == "websocket":  # the API has none
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _header(scope, b"content-length") not in (None, "0") or \
            _header(scope, b"transfer-encoding") is not None
        try:
            _check(scope, self.token, self.open_paths, self.max_body)
        except Refused as refused:
            await self._refuse(send, refused, close=announced)
            return
        await self._forward(scope, receive, send)

    async def _forward(self, scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        read, state = 0, {"started": False, "refused": False}

        async def bounded() -> Any:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body and not state["refused"]:
                    state["refused"] = True
                    if not state["started"]:
                        await self._refuse(send, Refused(
                            413, f"the request body is larger than {self.max_body} bytes"), close=True)
                    return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def watched(message: dict[str, Any]) -> None:
            if state["refused"]:
                return  # the 413 went out instead of whatever the application answers now
            if message["type"] == "http.response.start":
                state["started"] = True
                route = scope.get("route")
                self.answered(scope["method"], getattr(route, "path", "unmatched"), message["status"])
            await send(message)

        try:
            await self.app(scope, bounded, watched)
        except Exception:
            if not (state["started"] or state["refused"]):
                raise
            # already answered (a 500 the application's handler logged, or the 413): nothing to add

    async def _refuse(self, send: Asgi, refused: Refused, close: bool) -> None:
        self.count({401: "unauthorized", 413: "too_large", 414: "url_too_long"}.get(refused.status, "bad_request"))
        body = json.dumps({"detail": refused.detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
