"""A message that crashes the process while it is being stored (issue 12, finding 1): the broker
hands it back at every restart, so each worker counts its attempts in the store *before* handling
it; once a message has failed ``MAX_ATTEMPTS`` times it is dead-lettered ("failed N times") and
acknowledged without being handled again. A crash is simulated by a BaseException out of the
store function (no ``except Exception`` stops it) and a fresh worker on the same store per
"restart", given the same (redelivered) message."""

from __future__ import annotations

import queue
from dataclasses import replace

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import cloud.ingest
from cloud.attempts import MAX_ATTEMPTS
from cloud.ingest import IngestWorker
from cloud.store import Attempt, DeadLetter, TelemetryRow
from contract import topics
from contract.telemetry import Telemetry
from tests.cloud.test_ingest import window
from transport.client import Received


class ProcessDied(BaseException):
    """What a segfault, a MemoryError in C or a SIGKILL looks like to the worker: nothing after it runs."""


class Redelivering:
    """A broker session: what is not acknowledged is handed to the next worker again."""

    def __init__(self, messages: list[Received]) -> None:
        self.unacked = {m.mid: m for m in messages}
        self.handed_out: set[int] = set()
        self.inbox: queue.Queue[object] = queue.Queue()

    def restart(self) -> None:
        """Hand out what is unacknowledged: marked DUP if handed out before (as Mosquitto does:
        tests/integration/test_redelivery.py)."""
        for mid, message in self.unacked.items():
            self.inbox.put(replace(message, dup=mid in self.handed_out))
            self.handed_out.add(mid)

    def ack(self, mid: int, qos: int) -> None:
        self.unacked.pop(mid, None)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        return None  # the telemetry acks to the devices: offline here (they would re-send)


def test_a_message_that_kills_the_worker_is_dead_lettered_after_n_attempts(
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = cloud.ingest._telemetry, []

    def deadly(session: Session, telemetry: Telemetry, device: str | None) -> object:
        calls.append(telemetry.seq)
        if telemetry.seq == 2:
            raise ProcessDied
        return real(session, telemetry, device)

    monkeypatch.setattr(cloud.ingest, "_telemetry", deadly)
    broker = Redelivering([Received(topics.telemetry("fridge-k"), window("fridge-k", 2), mid=2, qos=1)])
    for _ in range(MAX_ATTEMPTS):
        broker.restart()
        with pytest.raises(ProcessDied):
            IngestWorker(broker, sessions).drain()  # type: ignore[arg-type]
    assert calls == [2] * MAX_ATTEMPTS
    broker.restart()  # the next life: the message comes back once more
    broker.inbox.put(Received(topics.telemetry("fridge-k"), window("fridge-k", 3), mid=3, qos=1))
    worker = IngestWorker(broker, sessions)  # type: ignore[arg-type]
    assert worker.drain() == 2
    assert calls == [2] * MAX_ATTEMPTS + [3]  # not handled a fourth time; the healthy one is
    assert broker.unacked == {} and worker.counts["dead"] == 1 and worker.counts["stored"] == 1
    with sessions() as session:
        (letter,) = session.scalars(select(DeadLetter)).all()
        assert letter.reason.startswith(f"failed {MAX_ATTEMPTS} times")
        assert letter.topic == topics.telemetry("fridge-k")
        assert session.scalar(select(func.count()).select_from(TelemetryRow)) == 1
        assert session.scalar(select(func.count()).select_from(Attempt)) == 0  # nothing left behind


def test_attempts_of_handled_messages_are_cleared_and_a_store_outage_does_not_count(
        sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """A message handled is forgotten; one that failed because the store was away is not blamed."""
    from sqlalchemy.exc import OperationalError

    real, fail = cloud.ingest._telemetry, {"left": 0}

    def flaky(session: Session, telemetry: Telemetry, device: str | None) -> object:
        if fail["left"]:
            fail["left"] -= 1
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(session, telemetry, device)

    monkeypatch.setattr(cloud.ingest, "_telemetry", flaky)
    monkeypatch.setattr(cloud.ingest.time, "sleep", lambda s: None)
    broker = Redelivering([Received(topics.telemetry("fridge-o"), window("fridge-o", 1), mid=1, qos=1)])
    for _ in range(MAX_ATTEMPTS + 1):  # the store is down for longer than the worker retries, each life
        fail["left"] = 8
        broker.restart()
        with pytest.raises(OperationalError):
            IngestWorker(broker, sessions).drain()  # type: ignore[arg-type]
    broker.restart()
    worker = IngestWorker(broker, sessions)  # type: ignore[arg-type]
    assert worker.drain() == 1 and worker.counts["stored"] == 1 and broker.unacked == {}
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0
        assert session.scalar(select(func.count()).select_from(Attempt)) == 0


def test_a_bug_after_the_commit_does_not_hand_the_batch_back_forever(sessions: sessionmaker[Session]) -> None:
    """The batch is stored; then publishing the devices' telemetry acks meets a bug. That turn fails
    (the supervisor counts it and runs ingestion again), but the broker has its acknowledgements: the
    messages are not redelivered into the same bug at every turn."""

    class Buggy(Redelivering):
        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
            raise TypeError("a bug in the ack path")

    broker = Buggy([Received(topics.telemetry("fridge-q"), window("fridge-q", 1), mid=1, qos=1)])
    broker.restart()
    with pytest.raises(TypeError):
        IngestWorker(broker, sessions).drain()  # type: ignore[arg-type]
    assert broker.unacked == {}  # stored and acknowledged: the broker hands nothing back
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TelemetryRow)) == 1
