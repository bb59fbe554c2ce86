"""Ingestion: what devices publish, validated against the contract and stored.

``ingest(session, topic, payload)`` is a plain function: state upserts the device, telemetry is
stored once per ``(device, spool epoch, seq)`` (and the drops a window reports are kept), events
once per payload digest (and move the rollout job they belong to), missing-chunk reports are
handed back for the publisher, and anything invalid lands in ``dead_letters`` with the reason.
:class:`IngestWorker` runs it behind an MQTT connection with a persistent session, optionally as
one of several MQTT v5 shared-subscription workers; once a batch is committed it confirms each
device's windows on that device's acks topic (``TelemetryAck``), duplicates included, and only
then may the device delete them.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud import attempts, rollup
from cloud.config import Telemetry as TelemetrySettings
from cloud.ingest_policy import kept_inventory, reason_kind
from cloud.rollouts import activated_late
from cloud.store import DeadLetter, Device, EventRow, RolloutDevice, SpoolDrops, TelemetryRow, now
from contract import topics
from contract.acks import TelemetryAck
from contract.base import MAX_INT, text
from contract.errors import ContractError
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import MissingChunks
from transport.client import Acked, Connected, Inbound, Received, Subscribed, Transport

log = logging.getLogger("coldchain.ingest")
DEAD_LETTER_BYTES = 64 * 1024
_ORDER = {state: i for i, state in enumerate(JobState)}
ACTIVE_STATES = frozenset({JobState.ACTIVATING, JobState.PROBATION, JobState.SUCCEEDED})

Kind = Literal["stored", "duplicate", "dead", "missing", "ignored"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str | None = None
    missing: MissingChunks | None = None
    window: tuple[str, str | None, int] | None = None  # (device, epoch, seq) of telemetry stored now or before
    lag_s: float | None = None  # telemetry stored now: seconds from the window's end to its storage


def _insert(session: Session, table: Any, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if a row was written (safe with concurrent workers)."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the store speaks SQLite and PostgreSQL, not {dialect}")
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys).returning(table.c.id)
    return session.execute(statement).first() is not None


def dead_letter(session: Session, topic: str, payload: bytes, reason: str, kind: str | None = None) -> Outcome:
    session.add(DeadLetter(topic=text(topic, 1000), payload=payload[:DEAD_LETTER_BYTES], reason=text(reason, 4000),
                           kind=(kind or reason_kind(reason))[:48], received_at=now()))
    log.info("dead letter on %s: %s", topic, reason)
    return Outcome("dead", reason)


def ingest(session: Session, topic: str, payload: bytes,  # noqa: PLR0911 (one return per kind)
           settings: TelemetrySettings | None = None) -> Outcome:
    """Validate and store one message. Never raises for bad input: that is a dead letter.
    ``settings``: what is kept of inventories, per group (``cloud.config.Telemetry``)."""
    try:
        parsed = topics.parse(topic)
        device = parsed.device_id
        if parsed.kind is topics.TopicKind.STATE:
            return _state(session, DeviceState.from_json(payload), device)
        if parsed.kind is topics.TopicKind.TELEMETRY:
            return _telemetry(session, kept_inventory(session, Telemetry.from_json(payload), settings), device)
        if parsed.kind is topics.TopicKind.EVENTS:
            return _event(session, payload, device)
        if parsed.kind is topics.TopicKind.MISSING:
            report = MissingChunks.from_json(payload)
            if report.device_id != device or report.sha256 != parsed.sha256:
                return dead_letter(session, topic, payload, "missing-chunk report names another device or artifact "
                                   "than its topic")
            return Outcome("missing", missing=report)
        return Outcome("ignored")
    except ContractError as exc:
        return dead_letter(session, topic, payload, f"{type(exc).__name__}: {exc}")


def _check_device(payload_device: str, topic_device: str | None) -> None:
    if payload_device != topic_device:
        raise ContractError(f"payload device_id {payload_device!r} does not match the topic's {topic_device!r}: "
                            "a device may publish only under its own id")


def _state(session: Session, state: DeviceState, device_id: str | None) -> Outcome:
    _check_device(state.device_id, device_id)
    row = session.get(Device, state.device_id)
    if row is None:  # two workers may see a new device at once: insert-if-absent, then read it
        _insert(session, Device.__table__, {"id": state.device_id, "groups": [], "tags": {}, "reported_groups": [],
                                            "online": False, "first_seen": now(), "last_seen": now()}, ["id"])
        row = session.execute(select(Device).where(Device.id == state.device_id)).scalar_one()
    row.last_seen = now()
    ts = state.ts if state.ts.tzinfo is not None else state.ts.replace(tzinfo=UTC)  # a device's naive time: UTC
    if state.online and row.state_ts is not None and ts < row.state_ts:
        return Outcome("ignored", "stale state")  # older than the one applied (a copy held across a reconnect)
    row.online = state.online
    if state.online:  # the last will carries identity only (made at connect): keep what the device said before
        row.state_ts = ts
        row.board, row.agent_version = state.board, state.agent_version
        row.protocol, row.state_version = state.protocol, state.schema_version  # version 1: protocol 1
        row.faults = [f.model_dump(mode="json") for f in state.faults]  # before version 5: none reported
        row.reported_groups = list(state.groups)
        row.active = None if state.active is None else state.active.model_dump(mode="json")
        row.active_sha256 = None if state.active is None else state.active.sha256
        row.previous = None if state.previous is None else state.previous.model_dump(mode="json")
        if state.job is not None:
            row.job_id, row.job_state = state.job.job_id, state.job.state.value
            move_job(session, state.device_id, state.job.job_id, state.job.state, None)  # its events may be lost
    return Outcome("stored")


def _telemetry(session: Session, window: Telemetry, device_id: str | None) -> Outcome:
    _check_device(window.device_id, device_id)
    received = now()
    stored = _insert(session, TelemetryRow.__table__, {
        "device_id": window.device_id, "epoch": window.epoch or "", "seq": window.seq,
        "bundle_sha256": None if window.bundle is None else window.bundle.sha256,
        "window_start": window.window_start, "window_end": window.window_end, "inferences": window.inferences,
        "errors": min(sum(window.errors.values()), MAX_INT),  # each count is bounded, their sum is not
        "latency_p95": None if window.latency_ms is None else window.latency_ms.p95,
        "payload": window.model_dump(mode="json"), "received_at": received}, ["device_id", "epoch", "seq"])
    if stored:
        rollup.add(session, window, received)  # what monitoring and the gates read, kept past retention
    if stored and window.spool.evicted:
        _dropped(session, window.device_id, window.epoch or "", window.spool.evicted)
    end = window.window_end if window.window_end.tzinfo is not None else window.window_end.replace(tzinfo=UTC)
    return Outcome("stored" if stored else "duplicate", window=(window.device_id, window.epoch, window.seq),
                   lag_s=(now() - end).total_seconds() if stored else None)


def _dropped(session: Session, device_id: str, epoch: str, evicted: int) -> None:
    """Keep the highest running total of dropped windows a device reported for a spool epoch."""
    dialect = session.get_bind().dialect.name
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = insert(SpoolDrops).values(device_id=device_id, epoch=epoch, evicted=evicted, updated_at=now())
    highest = (func.max if dialect == "sqlite" else func.greatest)(SpoolDrops.evicted, statement.excluded.evicted)
    session.execute(statement.on_conflict_do_update(index_elements=["device_id", "epoch"],
                                                    set_={"evicted": highest, "updated_at": now()}))


def dropped_windows(session: Session, device_ids: list[str]) -> dict[str, int]:
    """Windows each device dropped unsent (spool full), summed over its spool epochs; only those with drops."""
    found = session.execute(select(SpoolDrops.device_id, func.sum(SpoolDrops.evicted))
                            .where(SpoolDrops.device_id.in_(device_ids), SpoolDrops.evicted > 0)
                            .group_by(SpoolDrops.device_id)).all()
    return {device: int(total) for device, total in found}


def acks(outcomes: list[Outcome]) -> list[TelemetryAck]:
    """One ack per device and spool epoch for the telemetry of a committed batch."""
    stored: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.window is not None:
            device, epoch, seq = outcome.window
            stored[(device, epoch)].append(seq)
    return [ack for (device, epoch), seqs in stored.items() for ack in TelemetryAck.of(device, epoch, seqs)]


def _sender(topic: str) -> str | None:
    try:
        return topics.parse(topic).device_id
    except ContractError:
        return None


def seen(session: Session, device_ids: set[str]) -> None:
    """Any message from a device moves its "last seen", not only a change of state (one statement a batch)."""
    if device_ids:
        session.execute(update(Device).where(Device.id.in_(device_ids)).values(last_seen=now()))


def _event(session: Session, payload: bytes, device_id: str | None) -> Outcome:
    event = decode_event(payload)
    _check_device(event.device_id, device_id)
    job_id = getattr(event, "job_id", None)
    state = event.state.value if isinstance(event, JobEvent) else None
    reason = event.reason if isinstance(event, JobEvent) else getattr(event, "message", None)
    stored = _insert(session, EventRow.__table__, {
        "digest": hashlib.sha256(payload).hexdigest(), "device_id": event.device_id, "type": event.type,
        "job_id": job_id, "state": state, "reason": reason, "payload": event.model_dump(mode="json"), "ts": event.ts,
        "received_at": now()}, ["digest"])
    if stored and isinstance(event, JobEvent):
        job_moved(session, event)
    return Outcome("stored" if stored else "duplicate")


def job_moved(session: Session, event: JobEvent) -> None:
    move_job(session, event.device_id, event.job_id, event.state, event.reason)


def move_job(session: Session, device_id: str, job_id: str, new: JobState, reason: str | None) -> None:
    """Move the rollout job an event (or the device's state) reports, forward only (events may
    arrive out of order); an event's reason fills in that of a state that came first without one."""
    row = session.scalar(select(RolloutDevice).where(RolloutDevice.job_id == job_id))
    if row is None or row.device_id != device_id:
        return
    current = JobState(row.state) if row.state in JobState.__members__ else None
    left = row.state in ("SKIPPED", "SUPERSEDED")  # no longer the rollout's job: what it does is not judged
    forward = not left and (current is None or (not current.terminal and _ORDER[new] > _ORDER[current]) or (
        new is JobState.ROLLED_BACK and current is JobState.SUCCEEDED))
    if forward:
        row.state, row.reason = new.value, reason
        if new in ACTIVE_STATES:  # late, after a halted rollout ended: it rolls back again
            activated_late(session, row)
    elif current is new and reason and (not row.reason or new in (JobState.READY, JobState.PROBATION)):
        row.reason = reason  # the state said it first without the reason, or why READY / PROBATION waits changed
    if new in ACTIVE_STATES:
        row.activated = True
    session.execute(update(Device).where(Device.id == device_id).values(job_id=job_id, job_state=row.state))


INGEST_FILTERS = [topics.all_devices(k) for k in (topics.TopicKind.STATE, topics.TopicKind.TELEMETRY,
                                                  topics.TopicKind.EVENTS, topics.TopicKind.MISSING)]


def subscriptions(share_group: str | None) -> list[str]:
    """What an ingestion worker subscribes to; shared (``$share/<group>/...``) when it is one of several."""
    return [topics.shared(share_group, f) if share_group else f for f in INGEST_FILTERS]


class IngestWorker:
    """Drains a transport's queue into the store in batches (one transaction per batch).

    Missing-chunk reports go to ``on_missing`` (the publisher). Counts are kept for monitoring.
    """

    def __init__(self, transport: Transport, sessions: sessionmaker[Session], share_group: str | None = None,
                 batch: int = 200, on_missing: Any = None, on_acked: Callable[[int], None] | None = None,
                 max_attempts: int = attempts.MAX_ATTEMPTS, settings: TelemetrySettings | None = None) -> None:
        self.transport, self.sessions, self.share_group = transport, sessions, share_group
        self.batch, self.on_missing, self.max_attempts = batch, on_missing, max_attempts
        self.settings = settings  # inventories per group
        self.on_acked = on_acked or (lambda mid: None)  # PUBACKs of what this connection published
        self.counts: dict[str, int] = {"stored": 0, "duplicate": 0, "dead": 0, "missing": 0, "ignored": 0, "poison": 0,
                                       "acks": 0}
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscriptions (SUBACK)
        self.lag_s: float | None = None  # the latest batch's largest telemetry lag (window end to storage)

    def drain(self, timeout: float = 0.2) -> int:
        """Handle what is queued (up to ``batch`` messages) in one transaction; return how many."""
        items: list[Inbound] = []
        try:
            items.append(self.transport.inbox.get(timeout=timeout))
            while len(items) < self.batch:
                items.append(self.transport.inbox.get_nowait())
        except queue.Empty:
            pass
        self._connection(items)
        received = [i for i in items if isinstance(i, Received)]
        if not received:
            return 0
        outcomes = self._attempt(received)
        for outcome in outcomes:
            self.counts[outcome.kind] += 1
        lags = [o.lag_s for o in outcomes if o.lag_s is not None]
        if lags:
            self.lag_s = max(lags)
        ack = getattr(self.transport, "ack", None)
        if ack is not None:  # stored (committed) first, acknowledged after: a crash in between redelivers;
            for item in received:  # acknowledged before the rest, so a bug in it cannot hand the batch back forever
                ack(item.mid, item.qos)
        reports = [o.missing for o in outcomes if o.missing is not None]
        for confirmation in acks(outcomes):  # committed: the devices may delete these windows now
            # not sent (offline): the device sends the windows again after its timeout, and they are acked then
            if self.transport.publish(topics.acks(confirmation.device_id), confirmation.to_json()) is not None:
                self.counts["acks"] += 1
        if self.on_missing is not None:
            for report in reports:
                self.on_missing(report)
        return len(received)

    def _connection(self, items: list[Inbound]) -> None:
        """(Re)connected: subscribe again; SUBACK: ready; PUBACKs go to whoever published."""
        if any(isinstance(i, Connected) for i in items):
            self.transport.subscribe(subscriptions(self.share_group))
            self.connected.set()
        if any(isinstance(i, Subscribed) and i.granted for i in items):
            self.subscribed.set()
        for mid in [i.mid for i in items if isinstance(i, Acked)]:
            self.on_acked(mid)

    def _attempt(self, received: list[Received]) -> list[Outcome]:
        """Count an attempt for each message the broker hands out again (DUP: delivered before and
        never acknowledged, so handling it may have taken a process down; ``cloud.attempts``) before
        handling it: one whose handling already began ``max_attempts`` times is a dead letter, never
        handled again. A first delivery costs nothing (no count: nothing can have failed yet).
        Stored messages clear their count in the transaction that stores them."""
        keys = [attempts.key(item) if item.dup else None for item in received]
        counted = [k for k in keys if k is not None]
        # a DUP message's count is its earlier deliveries after the first: max_attempts - 1 of them is enough
        exhausted = attempts.begin(self.sessions, counted, self.max_attempts - 1) if counted else {}
        todo = [(item, k) for item, k in zip(received, keys, strict=True) if k is None or k not in exhausted]
        outcomes = self._give_up([(item, exhausted[k] + 1) for item, k in zip(received, keys, strict=True)
                                  if k is not None and k in exhausted]) if exhausted else []
        if not todo:
            return outcomes
        try:
            return outcomes + self._store([item for item, _ in todo], [k for _, k in todo])
        except OperationalError:  # the store, not the messages: this attempt does not count
            try:
                attempts.forgive(self.sessions, [k for _, k in todo if k is not None])
            except OperationalError:
                log.warning("could not take back the attempt counts of %d messages", len(todo))
            raise

    def _give_up(self, items: list[tuple[Received, int]]) -> list[Outcome]:
        with self.sessions.begin() as session:
            attempts.clear(session, [attempts.key(item) for item, _ in items])
            return [dead_letter(session, item.topic, item.payload, f"failed {count} times: handling it never "
                                "finished (the process died while it was handled); not handled again")
                    for item, count in items]

    def _store(self, received: list[Received], keys: list[str | None], tries: int = 8) -> list[Outcome]:
        """One transaction for the batch; a busy or lost database is retried (the messages are not
        acknowledged until it commits, so nothing is lost while it retries)."""
        for attempt in range(tries):
            try:
                with self.sessions.begin() as session:
                    outcomes = [ingest(session, item.topic, item.payload, self.settings) for item in received]
                    seen(session, {d for item in received if (d := _sender(item.topic)) is not None})
                    attempts.clear(session, [k for k in keys if k is not None])
                    return outcomes
            except (OperationalError, IntegrityError) as exc:  # busy, lost, or raced by another worker
                if attempt == tries - 1:
                    raise
                log.warning("store busy or unreachable (%s); retrying a batch of %d", exc.orig, len(received))
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
            except Exception:  # one poison message must not stop the batch, or the cloud
                log.exception("a batch of %d failed; storing its messages one by one", len(received))
                return [self._store_one(item, k) for item, k in zip(received, keys, strict=True)]
        return []

    def _store_one(self, item: Received, key: str | None) -> Outcome:
        """One message in its own transaction; if it fails for any reason other than a busy store,
        it becomes a dead letter with that reason (and is acknowledged: never handed back forever)."""
        sender = {d} if (d := _sender(item.topic)) is not None else set()
        try:
            with self.sessions.begin() as session:
                attempts.clear(session, [key] if key else [])
                outcome = ingest(session, item.topic, item.payload, self.settings)
                seen(session, sender)  # as the batch path does: any message moves "last seen"
                return outcome
        except OperationalError:
            raise  # the store, not the message: not acknowledged, retried by the broker
        except Exception as exc:  # whatever it is, it is this message's: a dead letter
            self.counts["poison"] += 1
            reason = f"{type(exc).__name__} while storing: {str(exc).splitlines()[0][:500] if str(exc) else ''}"
            with self.sessions.begin() as session:
                attempts.clear(session, [key] if key else [])
                seen(session, sender)
                return dead_letter(session, item.topic, item.payload, reason)

    def run(self, stop: threading.Event) -> None:
        self.transport.start()
        try:
            while not stop.is_set():
                self.drain()
        finally:
            self.transport.stop()
