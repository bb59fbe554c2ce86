"""API tokens with scopes: ``read`` (every GET), ``operate`` (rollouts, bundles: also read) and
``admin`` (everything, e.g. exports with raw device ids). Only a token's sha256 is stored; the
token itself is shown once, when it is created. Created, listed and revoked with ``coldchain
token`` (each recorded in the audit log)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.audit import record
from cloud.errors import CloudError, NotFoundError
from cloud.queries.models import View
from cloud.store import ApiToken, WebSession, now

ScopeName = Literal["read", "operate", "admin"]
Refusal = Literal["missing", "unknown", "revoked"]  # why a token was not accepted (never the token)
SCOPES: tuple[ScopeName, ...] = ("read", "operate", "admin")  # each includes the ones before it
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
PREFIX = "cct_"  # recognisable in a leaked log or a secret scanner
USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token


class TokenError(CloudError):
    """A token that cannot be created or revoked (bad name or scope, name taken)."""


@dataclass(frozen=True)
class Identity:
    """Who a request is: the token's name and scope."""

    name: str
    scope: ScopeName

    def allows(self, needed: ScopeName) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


class TokenView(View):
    name: str
    scope: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


class WhoAmI(View):
    """What ``GET /whoami`` tells a token about itself (never the token or its digest)."""

    name: str
    scope: str
    created_at: datetime | None  # None: the bootstrap token (COLDCHAIN_API_TOKEN), not in the store
    created_by: str | None
    last_used_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(sessions: sessionmaker[Session], name: str, scope: str, actor: str) -> str:
    """A new token (returned once, never stored): ``cct_`` and 43 URL-safe characters (256 bits)."""
    def refuse(why: str) -> TokenError:
        record(sessions, actor, "token.create", name[:64], f"refused: {why}", {"scope": scope})
        return TokenError(why)

    if not NAME.match(name):
        raise refuse(f"a token name is 1-64 letters, digits, '_', '.', ':' or '-', got {name[:80]!r}")
    if scope not in SCOPES:
        raise refuse(f"scope is one of {', '.join(SCOPES)}, got {scope[:20]!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        if session.get(ApiToken, name) is not None:
            raise refuse(f"a token named {name!r} exists (revoked ones keep their name); choose another")
        session.add(ApiToken(name=name, digest=digest(token), scope=scope, created_at=now(), created_by=actor))
    record(sessions, actor, "token.create", name, "ok", {"scope": scope})
    return token


def listed(sessions: sessionmaker[Session]) -> list[TokenView]:
    with sessions() as session:
        return [TokenView(name=t.name, scope=t.scope, created_at=t.created_at, created_by=t.created_by,
                          revoked_at=t.revoked_at, last_used_at=t.last_used_at)
                for t in session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)).all()]


def whoami(sessions: sessionmaker[Session], identity: Identity) -> WhoAmI:
    with sessions() as session:
        row = session.get(ApiToken, identity.name) if identity.name != Authenticator.BOOTSTRAP else None
    if row is None:
        return WhoAmI(name=identity.name, scope=identity.scope, created_at=None, created_by=None, last_used_at=None)
    return WhoAmI(name=row.name, scope=row.scope, created_at=row.created_at, created_by=row.created_by,
                  last_used_at=row.last_used_at)


def revoke(sessions: sessionmaker[Session], name: str, actor: str) -> None:
    """Revoke the token and, in the same transaction, end the dashboard sessions signed in with it."""
    ended = 0
    with sessions.begin() as session:
        row = session.get(ApiToken, name)
        if row is not None:
            row.revoked_at = row.revoked_at or now()
            ended = session.scalar(select(func.count()).where(WebSession.token_name == name)) or 0
            session.execute(delete(WebSession).where(WebSession.token_name == name))
    if row is None:
        record(sessions, actor, "token.revoke", name[:64], "refused: no such token")
        raise NotFoundError(f"no token named {name[:80]!r} (see `coldchain token list`)")
    record(sessions, actor, "token.revoke", name, "ok", {"sessions_ended": ended})


class Authenticator:
    """Bearer token -> Identity, from the store (a revoked token fails at its next request) or the
    optional bootstrap token (``COLDCHAIN_API_TOKEN``, scope admin, compared in constant time)."""

    BOOTSTRAP = "COLDCHAIN_API_TOKEN"

    def __init__(self, sessions: sessionmaker[Session], bootstrap: str | None = None) -> None:
        if bootstrap is not None and len(bootstrap) < 16:
            raise CloudError("the API token must be at least 16 characters")
        self.sessions, self.bootstrap = sessions, bootstrap

    def __call__(self, authorization: str | None) -> Identity | None:
        found = self.verify(authorization)
        return found if isinstance(found, Identity) else None

    def verify(self, authorization: str | None) -> Identity | Refusal:
        """The identity, or why there is none: no header (``missing``), a token the store does not
        have or a header that is no bearer token (``unknown``), a revoked token (``revoked``)."""
        if not (authorization or "").strip():
            return "missing"
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given or len(given) > 512:
            return "unknown"
        return self.verify_digest(digest(given))

    def verify_digest(self, hashed: str) -> Identity | Refusal:
        """As ``verify``, for the token whose sha256 is ``hashed`` (a dashboard session's token)."""
        if self.bootstrap is not None and hmac.compare_digest(hashed, digest(self.bootstrap)):
            return Identity(self.BOOTSTRAP, "admin")
        clock = now()
        with self.sessions.begin() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.digest == hashed))
            if row is None or row.scope not in SCOPES:
                return "unknown"
            if row.revoked_at is not None:
                return "revoked"
            if row.last_used_at is None or clock - row.last_used_at > USED_EVERY:
                session.execute(update(ApiToken).where(ApiToken.name == row.name).values(last_used_at=clock))
            return Identity(row.name, row.scope)
