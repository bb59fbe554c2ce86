"""The dashboard's sign-in: an API token typed into a form, checked like a bearer token
(``cloud.tokens.Authenticator``), kept in one cookie (HttpOnly, SameSite=Strict, Path=/ui, Secure
over HTTPS) and checked again at each request, so a revoked token signs out at its next page.
Nothing else is stored, on either side.

Writes from the browser carry a CSRF token in their form: an HMAC of the session's token under a
key of this process (a restart makes open forms stale, never valid for another token); a write
whose Origin is another site is refused too. SameSite=Strict already keeps the cookie off
cross-site requests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request

from cloud.tokens import Identity, Refusal, ScopeName

COOKIE = "coldchain_session"
MAX_FORM_BYTES = 16 * 1024
PREFIX = "/ui"


class LoginRequired(Exception):
    """No valid session: the browser goes to the sign-in page, and back to ``next`` after it."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Forbidden(Exception):
    """A write the dashboard refuses (scope, CSRF, origin): a 403 page saying why."""

    def __init__(self, why: str, action: str, target: str | None) -> None:
        super().__init__(why)
        self.why, self.action, self.target = why, action, target


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page: the token's identity and the CSRF token its forms carry."""

    identity: Identity
    csrf: str

    def allows(self, scope: ScopeName) -> bool:
        return self.identity.allows(scope)


def safe_next(path: str | None) -> str:
    """Only a path of the dashboard itself: never another host (``//evil``, ``https://...``)."""
    if not path or not path.startswith(PREFIX + "/") or path.startswith("//") or "\\" in path:
        return PREFIX + "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return PREFIX + "/"
    return path


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, at most MAX_FORM_BYTES, one value per field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items() if v}


class Sessions:
    def __init__(self, verify: Callable[[str | None], Identity | Refusal], hours: float = 12.0,
                 key: bytes | None = None, refused: Callable[[str], None] = lambda reason: None) -> None:
        self.verify = verify  # the API's: "Bearer <token>" -> Identity, or why not
        self.refused = refused  # told of failed sign-ins and scope refusals (metrics)
        self.max_age = int(timedelta(hours=hours).total_seconds())
        self.key = key or secrets.token_bytes(32)

    def csrf_for(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        return hmac.new(self.key, b"csrf:" + digest, hashlib.sha256).hexdigest()[:40]

    def identify(self, token: str | None) -> Identity | None:
        found = self._check(token)
        return found if isinstance(found, Identity) else None

    def sign_in(self, token: str) -> Identity | None:
        """The sign-in form's check: a refused token is counted (unknown or revoked)."""
        found = self._check(token)
        if isinstance(found, Identity):
            return found
        self.refused(found)
        return None

    def _check(self, token: str | None) -> Identity | Refusal:
        if not token:
            return "missing"
        return self.verify(f"Bearer {token}") if len(token) <= 512 else "unknown"

    def viewer(self, request: Request) -> Viewer:
        """A page's dependency (FastAPI runs it in a worker thread: it reads the store)."""
        token = request.cookies.get(COOKIE)
        identity = self.identify(token)
        if identity is None or token is None:
            where = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(where)
        return Viewer(identity, self.csrf_for(token))

    def check_write(self, request: Request, viewer: Viewer, fields: dict[str, str], action: str,
                    target: str | None, scope: ScopeName = "operate") -> None:
        """Raise Forbidden unless the write comes from this site with the session's CSRF token and
        the token's scope allows it."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Forbidden(f"the form was sent from another site ({origin[:80]})", action, target)
        if not hmac.compare_digest(fields.get("csrf", ""), viewer.csrf):
            raise Forbidden("the form's CSRF token is missing or stale: reload the page and try again", action, target)
        if not viewer.allows(scope):
            self.refused("scope")
            raise Forbidden(f"this needs a token of scope {scope}; token {viewer.identity.name!r} has scope "
                            f"{viewer.identity.scope}", action, target)

    def cookie_args(self, request: Request) -> dict[str, object]:
        same_site: Literal["strict"] = "strict"
        return {"key": COOKIE, "httponly": True, "samesite": same_site, "path": PREFIX,
                "secure": request.url.scheme == "https"}

    def login_url(self, next_path: str) -> str:
        return f"{PREFIX}/login?next={quote(safe_next(next_path), safe='/')}"
