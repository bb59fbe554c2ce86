"""The audit log: every write an operator (CLI or API token) or a scheduled job makes, recorded
in its own transaction, so a refused or failed write is recorded too."""

from __future__ import annotations

import getpass
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import StoreError
from cloud.store import AuditEntry, now

log = logging.getLogger("coldchain.audit")
MAX_DETAIL_CHARS = 4000


def cli_actor() -> str:
    """Who runs the CLI on this machine: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"[:160]
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli:unknown"


def record(sessions: sessionmaker[Session], actor: str, action: str, target: str | None, result: str,
           detail: dict[str, Any] | None = None) -> None:
    """Store one entry; a store that refuses it is an error (an unrecorded write must not pass silently)."""
    try:
        with sessions.begin() as session:
            session.add(AuditEntry(at=now(), actor=actor[:160], action=action[:64],
                                   target=None if target is None else target[:160], result=result[:MAX_DETAIL_CHARS],
                                   detail=detail or {}))
    except SQLAlchemyError as exc:
        log.error("could not record %s by %s on %s (%s): %s", action, actor, target, result, exc)
        raise StoreError(f"the audit log could not record {action}: {exc.__class__.__name__}") from exc
