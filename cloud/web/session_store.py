"""The dashboard's server-side sessions (table ``web_sessions``, ``cloud.store.WebSession``).

A sign-in makes a random session id (256 bits) for the cookie; the store keeps only its sha256,
the sha256 of the token it was made from and two times. Each page looks the session up and checks
its token again (``Authenticator.verify_digest``: a revoked token, or a bootstrap token the cloud no
longer runs with, ends the session there; ``cloud.tokens.revoke`` also deletes its sessions at
once), then its idle and absolute expiry. Expired and ended sessions are deleted; a sign-in also
deletes the browser's previous session, every expired one and the token's oldest beyond
``MAX_PER_TOKEN``, so the table stays small without a job of its own."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.store import WebSession, now
from cloud.tokens import Identity, Refusal, digest

Ended = Refusal | Literal["expired"]  # why a cookie is no (longer a) session
TOUCH_EVERY = timedelta(seconds=30)  # seen_at is written at most this often per session
MAX_PER_TOKEN = 20  # sessions kept per token; a sign-in beyond deletes the oldest
MAX_ID_CHARS = 128


class SessionStore:
    def __init__(self, sessions: sessionmaker[Session], verify_digest: Callable[[str], Identity | Refusal],
                 idle: timedelta, absolute: timedelta, clock: Callable[[], datetime] = now) -> None:
        self.sessions, self.verify_digest = sessions, verify_digest
        self.idle, self.absolute, self.clock = idle, absolute, clock

    def create(self, identity: Identity, token_digest: str, replaces: str | None = None) -> str:
        """A session for a token just checked; its id, for the cookie (never stored)."""
        session_id = secrets.token_urlsafe(32)
        at = self.clock()
        with self.sessions.begin() as session:
            if replaces and len(replaces) <= MAX_ID_CHARS:  # the browser's previous session: no fixation
                session.execute(delete(WebSession).where(WebSession.digest == digest(replaces)))
            session.execute(delete(WebSession).where(or_(WebSession.created_at < at - self.absolute,
                                                         WebSession.seen_at < at - self.idle)))
            oldest = session.scalars(select(WebSession.digest).where(WebSession.token_name == identity.name)
                                     .order_by(WebSession.created_at.desc()).offset(MAX_PER_TOKEN - 1)).all()
            if oldest:
                session.execute(delete(WebSession).where(WebSession.digest.in_(oldest)))
            session.add(WebSession(digest=digest(session_id), token_digest=token_digest, token_name=identity.name,
                                   created_at=at, seen_at=at))
        return session_id

    def identify(self, session_id: str | None) -> Identity | Ended:
        """The identity of a live session, or why there is none (an ended session is deleted)."""
        if not session_id:
            return "missing"
        if len(session_id) > MAX_ID_CHARS:
            return "unknown"
        key, at = digest(session_id), self.clock()
        with self.sessions() as session:
            row = session.get(WebSession, key)
            if row is None:
                return "unknown"
            token_digest, created, seen = row.token_digest, row.created_at, row.seen_at
        if at - created > self.absolute or at - seen > self.idle:
            self.end(session_id)
            return "expired"
        found = self.verify_digest(token_digest)
        if not isinstance(found, Identity):
            self.end(session_id)
            return found
        if at - seen >= TOUCH_EVERY:
            with self.sessions.begin() as session:
                session.execute(update(WebSession).where(WebSession.digest == key).values(seen_at=at))
        return found

    def end(self, session_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(WebSession).where(WebSession.digest == digest(session_id)))
