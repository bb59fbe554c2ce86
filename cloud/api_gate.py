"""The HTTP API's gate, an ASGI middleware in front of everything else: the bearer token is checked
from the request's headers before any byte of its body is read (only the probes go without; the
identity it stands for, ``cloud.tokens.Identity``, is left in the request's state for the routes'
scope checks), a
declared ``Content-Length`` over the limit is refused unread (413), a streamed (chunked) body is
counted and cut off once past the limit (413), and an over-long URL is refused (414). A refused
request that announced a body closes the connection, so the server does not drain it either."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import Any

import anyio.to_thread

from cloud.auth_limit import RateLimited
from cloud.tokens import Identity

log = logging.getLogger("coldchain.cloud.api")

MAX_BODY_BYTES = 1024 * 1024  # a request body (JSON) of at most 1 MiB
MAX_URL_BYTES = 8 * 1024  # path and query string together
Asgi = Callable[..., Any]


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _check_url(scope: dict[str, Any]) -> None:
    if len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b"")) > MAX_URL_BYTES:
        raise Refused(414, f"the URL is longer than {MAX_URL_BYTES} bytes")


def _check_length(scope: dict[str, Any], max_body: int) -> None:
    """Raise Refused for a request whose declared body is too large (headers only)."""
    length = _header(scope, b"content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(length) > max_body:
            raise Refused(413, f"the request body is larger than {max_body} bytes")


UNAUTHORIZED = Refused(401, "this route needs 'Authorization: Bearer <token>' (a token that is not revoked)",
                       {"WWW-Authenticate": "Bearer"})


class Gate:
    """ASGI middleware; ``authenticate(authorization header, client address)`` gives the identity
    or None, or raises RateLimited (a 429 with Retry-After; it may read the store: it runs in a
    worker thread); ``count(reason)`` is told about each refusal
    (``unauthorized``, ``too_large``, ...) and ``answered(method, route, status)`` about each response.
    ``max_bodies`` raises the body limit of some paths (a bundle upload). Paths under
    ``open_prefixes`` (the dashboard, which checks its own session cookie) go without a bearer token."""

    def __init__(self, app: Asgi, authenticate: Callable[[str | None, str], Identity | None],
                 open_paths: Collection[str], max_body: int = MAX_BODY_BYTES,
                 count: Callable[[str], None] = lambda reason: None,
                 answered: Callable[[str, str, int], None] = lambda method, route, status: None,
                 max_bodies: dict[str, int] | None = None, open_prefixes: tuple[str, ...] = ()) -> None:
        self.app, self.authenticate, self.open_paths = app, authenticate, frozenset(open_paths)
        self.open_prefixes = open_prefixes
        self.max_body, self.max_bodies = max_body, max_bodies or {}
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
        limit = self.max_bodies.get(scope["path"], self.max_body)
        try:
            _check_url(scope)
            path = scope["path"]
            if path not in self.open_paths and not path.startswith(self.open_prefixes):  # the token first
                header = _header(scope, b"authorization")
                client = scope.get("client")
                try:
                    identity = await anyio.to_thread.run_sync(self.authenticate, header, client[0] if client else "")
                except RateLimited as limited:
                    raise Refused(429, str(limited), {"Retry-After": str(limited.retry_after)}) from limited
                if identity is None:
                    raise UNAUTHORIZED
                scope.setdefault("state", {})["identity"] = identity
            _check_length(scope, limit)
        except Refused as refused:
            await self._refuse(send, refused, close=announced)
            return
        await self._forward(scope, receive, send, limit)

    async def _forward(self, scope: dict[str, Any], receive: Asgi, send: Asgi, limit: int) -> None:
        read, state = 0, {"started": False, "refused": False}

        async def bounded() -> Any:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit and not state["refused"]:
                    state["refused"] = True
                    if not state["started"]:
                        await self._refuse(send, Refused(
                            413, f"the request body is larger than {limit} bytes"), close=True)
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
        self.count({401: "unauthorized", 413: "too_large", 414: "url_too_long",
                    429: "rate_limited"}.get(refused.status, "bad_request"))
        body = json.dumps({"detail": refused.detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
