"""The dashboard's sign-in: an API token typed into the form, checked like a bearer token
(``cloud.tokens.Authenticator``), makes a server-side session (``cloud.web.session_store``) whose
random id is the one cookie (HttpOnly, SameSite=Strict, Path=/ui, Secure over HTTPS); the token
itself is never sent back to the browser. Every page checks the session, its token and its expiry.

Every POST (sign-in and sign-out too) must come from this site: its Origin, or without one its
Referer, must be this site's, else it is refused and counted (``no_origin``, ``cross_origin``): a
hostile page can neither sign a victim in with the attacker's token (login CSRF) nor write with the
victim's session. Writes also carry a CSRF token in their form, an HMAC keyed by the session id
(unique per session, worthless without the cookie). SameSite=Strict keeps the cookie off
cross-site requests as well."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request

from cloud.audit import record
from cloud.auth_limit import FailureLimiter
from cloud.tokens import Authenticator, Identity, ScopeName, digest
from cloud.web.session_store import SessionStore

COOKIE = "coldchain_session"
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 20
PREFIX = "/ui"


class LoginRequired(Exception):
    """No valid session: the browser goes to the sign-in page, and back to ``next`` after it."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class BadForm(Exception):
    """A form larger than MAX_FORM_BYTES or with more than MAX_FIELDS fields: a 400 page."""


class Forbidden(Exception):
    """A write the dashboard refuses (scope, CSRF, origin): a 403 page saying why."""

    def __init__(self, why: str, action: str, target: str | None) -> None:
        super().__init__(why)
        self.why, self.action, self.target = why, action, target


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page: the token's identity, the session and the CSRF token its forms carry."""

    identity: Identity
    session_id: str
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
    """An ``application/x-www-form-urlencoded`` body, at most MAX_FORM_BYTES and MAX_FIELDS fields
    (BadForm otherwise), one value per field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as exc:  # more fields than allowed
        raise BadForm(f"the form has more than {MAX_FIELDS} fields") from exc
    return {k: v[0] for k, v in fields.items() if v}


def cross_site(request: Request) -> tuple[str, str] | None:
    """Why a POST is not from this site (reason, message), or None: its Origin, or without one its
    Referer, must be this site's scheme, host and port."""
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return "no_origin", "the form came without an Origin or Referer header, so its site is unknown"
        try:
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        except ValueError:
            origin = referer
    if origin.lower() != own:
        return "cross_origin", f"the form was sent from another site ({origin[:80]})"
    return None


class Sessions:
    def __init__(self, authenticator: Authenticator, store: SessionStore, limiter: FailureLimiter,
                 refused: Callable[[str], None] = lambda reason: None) -> None:
        self.authenticator, self.store, self.limiter = authenticator, store, limiter
        self.refused = refused  # told of refused sign-ins, sessions, origins, CSRF tokens and scopes (metrics)
        self.max_age = int(store.absolute.total_seconds())

    @staticmethod
    def csrf_for(session_id: str) -> str:
        return hmac.new(session_id.encode(), b"coldchain.csrf", hashlib.sha256).hexdigest()[:40]

    def identify(self, session_id: str | None) -> Identity | None:
        found = self.store.identify(session_id)
        return found if isinstance(found, Identity) else None

    def sign_in(self, token: str, previous: str | None, address: str) -> str | None:
        """The sign-in form's check: a new session's id, or None for a refused token (counted:
        unknown or revoked, and as a failure of ``address``). RateLimited while ``address`` is
        locked out (counted, not audited: the lock-out bounds the audit rows). The browser's
        previous session is ended. Audited either way, with the address, never the token."""
        found = self.limiter.verify(address, lambda: self.authenticator.verify(f"Bearer {token}" if token else None),
                                    self.refused)
        if not isinstance(found, Identity):
            record(self.store.sessions, f"address:{address}", "dashboard.sign_in", None, f"refused: {found}",
                   {"address": address})
            return None
        made = self.store.create(found, digest(token), previous)
        record(self.store.sessions, found.actor, "dashboard.sign_in", None, "ok", {"address": address})
        return made

    def sign_out(self, viewer: Viewer, address: str) -> None:
        self.store.end(viewer.session_id)
        record(self.store.sessions, viewer.identity.actor, "dashboard.sign_out", None, "ok", {"address": address})

    def viewer(self, request: Request) -> Viewer:
        """A page's dependency (FastAPI runs it in a worker thread: it reads the store)."""
        session_id = request.cookies.get(COOKIE)
        found = self.store.identify(session_id)
        if not isinstance(found, Identity) or session_id is None:
            if found != "missing":
                self.refused(f"session_{found}")
            where = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(where)
        return Viewer(found, session_id, self.csrf_for(session_id))

    def check_origin(self, request: Request, action: str, target: str | None) -> None:
        """Raise Forbidden (counted) for a POST that is not from this site."""
        refusal = cross_site(request)
        if refusal is not None:
            self.refused(refusal[0])
            raise Forbidden(refusal[1], action, target)

    def check_write(self, request: Request, viewer: Viewer, fields: dict[str, str], action: str,
                    target: str | None, scope: ScopeName = "operate") -> None:
        """Raise Forbidden (counted) unless the write comes from this site with the session's CSRF
        token and the token's scope allows it."""
        self.check_origin(request, action, target)
        if not hmac.compare_digest(fields.get("csrf", ""), viewer.csrf):
            self.refused("csrf")
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
