"""How often handling a message began without ending, kept in the store across restarts.

Messages are acknowledged only after they are stored, so a message that kills the process while
it is being handled (a crash in a C extension, memory exhausted, SIGKILL) comes back from the
broker at every restart and would kill every new process too. Such a message comes back marked
DUP (MQTT re-delivers what was handed out and never acknowledged that way:
``tests/integration/test_redelivery.py``), so only DUP messages are counted: before a batch is
handled, each one's counter (keyed by the sha256 of topic and payload) is incremented and
committed; the transaction that stores the batch clears them. A message whose handling began
``MAX_ATTEMPTS`` times is dead-lettered ("failed N times") and acknowledged without being handled.
First deliveries, nearly all of them, cost no write.
A store outage is not the message's fault: its increment is taken back (``forgive``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from cloud.store import Attempt, now
from transport.client import Received

MAX_ATTEMPTS = 3


def key(item: Received) -> str:
    digest = hashlib.sha256(item.topic.encode("utf-8", "surrogatepass"))
    digest.update(b"\0")
    digest.update(item.payload)
    return digest.hexdigest()


def begin(sessions: sessionmaker[Session], keys: Iterable[str], limit: int = MAX_ATTEMPTS) -> dict[str, int]:
    """Count one more attempt for each key (committed before the messages are handled); return
    the keys that had already failed ``limit`` times, with that count (they are not counted again)."""
    unique = sorted(set(keys))
    if not unique:
        return {}
    with sessions.begin() as session:
        exhausted = {k: c for k, c in session.execute(
            select(Attempt.key, Attempt.count).where(Attempt.key.in_(unique), Attempt.count >= limit)).all()}
        fresh = [k for k in unique if k not in exhausted]
        if fresh:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = insert(Attempt).values([{"key": k, "count": 1, "updated_at": now()} for k in fresh])
            session.execute(statement.on_conflict_do_update(
                index_elements=["key"], set_={"count": Attempt.count + 1, "updated_at": now()}))
    return exhausted


def clear(session: Session, keys: Iterable[str]) -> None:
    """The messages were handled (stored or dead-lettered): forget them, in the same transaction."""
    unique = sorted(set(keys))
    if unique:
        session.execute(delete(Attempt).where(Attempt.key.in_(unique)))


def forgive(sessions: sessionmaker[Session], keys: Iterable[str]) -> None:
    """The store failed, not the messages: take back this attempt (best effort: the store may be gone)."""
    unique = sorted(set(keys))
    if unique:
        with sessions.begin() as session:
            session.execute(update(Attempt).where(Attempt.key.in_(unique), Attempt.count > 0)
                            .values(count=Attempt.count - 1))
