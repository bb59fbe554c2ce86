"""Command delivery to devices: a command (deploy, cancel, rollback, set_config, profile) counts as
sent only when the broker acknowledged it (PUBACK), and is re-sent (signed again, with a fresh
expiry) with a bounded exponential backoff until the device's job state shows its job id (a job
event, or the job in its retained state); then it stops. A command never confirmed after
``Backoff.attempts`` sends fails with a reason that says whether the broker took it (then the
device is away) or not (then the broker is).

Every command is a row in the store (:class:`cloud.store.CommandRow`), so a restarted controller
goes on where the last one stopped, and operator actions that only write the store can queue one.
:class:`Deliveries` is the one piece in memory: which MQTT message id carries which command. The
ingestion worker, which drains the transport's inbox, hands it every ``Acked(mid)``."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.store import CommandRow, Device, EventRow
from contract import COMMAND_SCHEMA_VERSION, topics
from contract.commands import (
    COMMAND,
    COMMAND_TTL_S,
    CancelCommand,
    DeployCommand,
    ProfileCommand,
    RollbackCommand,
    SetConfigCommand,
    TrustUpdateCommand,
    sign_command,
)
from transport.client import Transport

log = logging.getLogger("coldchain.commands")
Tracked = DeployCommand | CancelCommand | RollbackCommand | SetConfigCommand | ProfileCommand | TrustUpdateCommand
MAX_IN_FLIGHT = 10_000  # message ids remembered while their PUBACK is outstanding


@dataclass(frozen=True)
class Backoff:
    first_s: float = 2.0  # after the first send, wait this long for the device's answer
    max_s: float = 60.0  # ... doubling up to this
    attempts: int = 8  # sends the broker took; then the command is given up as unconfirmed
    offline_s: float = 1.0  # the client was not connected: try again this soon (not counted)

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_s, self.first_s * 2 ** max(0, attempts - 1)))


class Deliveries:
    """Message id -> job id of the commands whose PUBACK is outstanding, and the job ids acked
    since the controller last looked. Thread-safe: the controller publishes, the ingestion worker
    reports acknowledgements (MQTT callbacks only enqueue ``Acked`` on the transport's inbox)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, str] = {}
        self._acked: list[str] = []

    def publish(self, transport: Transport, topic: str, payload: bytes, job_id: str) -> int | None:
        """Publish and remember the message id; under the lock, so an ack cannot overtake it."""
        with self._lock:
            mid = transport.publish(topic, payload)
            if mid is not None:
                self._in_flight.pop(mid, None)
                self._in_flight[mid] = job_id
                for old in list(self._in_flight)[:-MAX_IN_FLIGHT]:
                    del self._in_flight[old]
            return mid

    def acked(self, mid: int) -> None:
        with self._lock:
            job_id = self._in_flight.pop(mid, None)
            if job_id is not None:
                self._acked.append(job_id)

    def take(self) -> list[str]:
        with self._lock:
            taken, self._acked = self._acked, []
            return taken


def cancel_command(job_id: str) -> CancelCommand:
    return CancelCommand(job_id=f"{job_id}.cancel", target_job_id=job_id)


def enqueue(session: Session, device_id: str, command: Tracked, rollout_id: str | None,
            clock: datetime, deadline: datetime | None = None) -> CommandRow:
    """Queue a command (idempotent by job id). It supersedes the open commands of the same device
    and rollout: a cancel or rollback makes re-sending the deploy pointless. With a ``deadline``
    (a deploy: its wave's timeout) it is re-sent until then, however many attempts that takes."""
    row = session.get(CommandRow, command.job_id)
    if row is not None:
        return row
    if rollout_id is not None:  # commands outside rollouts (set_config, trust updates) stand on their own
        for older in session.scalars(select(CommandRow).where(
                CommandRow.device_id == device_id, CommandRow.rollout_id == rollout_id, CommandRow.done.is_(False))):
            older.done, older.outcome, older.reason = True, "superseded", f"superseded by {command.job_id}"
    row = CommandRow(job_id=command.job_id, device_id=device_id, rollout_id=rollout_id, kind=command.type,
                     payload=command.model_dump(mode="json"), created_at=clock, next_at=clock, attempts=0, acks=0,
                     done=False, give_up_at=deadline)
    session.add(row)
    session.flush()
    return row


def delivery(row: CommandRow | None) -> str:
    """How a command's delivery went, for a device's reason."""
    if row is None:
        return "no command was sent"
    if row.attempts == 0:
        return f"the {row.kind} never reached the broker (not connected)"
    took = min(row.acks, row.attempts)
    return f"the {row.kind} was sent {row.attempts} times, the broker acknowledged {took}"


@dataclass
class Pumped:
    acked: list[CommandRow] = field(default_factory=list)  # the broker acknowledged them this turn
    failed: list[CommandRow] = field(default_factory=list)  # given up this turn: never confirmed


class Outbox:
    """Sends due commands, records acknowledgements and confirmations, gives up on the unconfirmed.
    Each send is signed by the operator ``key`` for the row's device, issued at the controller's
    clock and valid ``ttl_s`` (``contract.commands.sign_command``): a re-send carries the same job id
    and content with fresh times, so a device answers it with the job's state."""

    def __init__(self, transport: Transport, key: Ed25519PrivateKey, deliveries: Deliveries | None = None,
                 backoff: Backoff | None = None, ttl_s: float = COMMAND_TTL_S) -> None:
        self.transport, self.key, self.ttl_s = transport, key, ttl_s
        self.deliveries = deliveries or Deliveries()
        self.backoff = backoff or Backoff()

    def issue(self, session: Session, device_id: str, command: Tracked, rollout_id: str | None,
              clock: datetime, deadline: datetime | None = None) -> CommandRow:
        """Queue a command and send it now if it is new."""
        row = enqueue(session, device_id, command, rollout_id, clock, deadline)
        if row.attempts == 0 and not row.done and row.next_at <= clock:
            self._send(row, clock)
        return row

    def pump(self, session: Session, clock: datetime) -> Pumped:
        out = Pumped()
        for job_id in self.deliveries.take():
            row = session.get(CommandRow, job_id)
            if row is not None:
                row.acks += 1
                if row.acked_at is None:
                    row.acked_at = clock
                    out.acked.append(row)
        open_rows = list(session.scalars(select(CommandRow).where(CommandRow.done.is_(False))).all())
        shown = _shown(session, [r.job_id for r in open_rows])
        for row in open_rows:
            if (row.job_id, row.device_id) in shown:
                row.done, row.outcome = True, "confirmed"
            elif row.next_at <= clock:
                if row.attempts >= self.backoff.attempts and (row.give_up_at is None or clock >= row.give_up_at):
                    row.done, row.outcome = True, "unconfirmed"
                    span = (clock - row.created_at).total_seconds()
                    row.reason = (f"the device never confirmed the {row.kind}: {delivery(row)}, in {span:.0f} s "
                                  + ("(is the device online?)" if row.acks else "(is the broker reachable?)"))
                    log.warning("%s to %s: %s", row.job_id, row.device_id, row.reason)
                    out.failed.append(row)
                else:
                    self._send(row, clock)
        return out

    def _send(self, row: CommandRow, clock: datetime) -> None:
        body = {**row.payload, "schema_version": COMMAND_SCHEMA_VERSION}  # a row queued by an older cloud too
        command = sign_command(COMMAND.validate_python(body), self.key, row.device_id, clock, self.ttl_s)
        payload = command.to_json()
        mid = self.deliveries.publish(self.transport, topics.commands(row.device_id), payload, row.job_id)
        if mid is None:  # not connected: nothing went out, nothing is counted
            row.next_at = clock + timedelta(seconds=self.backoff.offline_s)
            return
        row.attempts += 1
        row.sent_at = clock
        row.next_at = clock + self.backoff.delay(row.attempts)


def _shown(session: Session, job_ids: list[str]) -> set[tuple[str, str]]:
    """(job id, device) pairs the devices reported: a job event, or the job in their state."""
    if not job_ids:
        return set()
    events = session.execute(select(EventRow.job_id, EventRow.device_id).where(EventRow.job_id.in_(job_ids))
                             .distinct()).all()
    states = session.execute(select(Device.job_id, Device.id).where(Device.job_id.in_(job_ids))).all()
    return {(str(j), str(d)) for j, d in [*events, *states]}
