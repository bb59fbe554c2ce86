"""Operator actions on rollouts: start, pause, resume, abort, roll back. Each only writes the
store; the controller's next ``step()`` (in the running cloud) acts on it, so the CLI, the HTTP API
and the controller never need to share memory.

Rollout status: RUNNING -> SUCCEEDED, or RUNNING -> ROLLING_BACK -> ROLLED_BACK (a gate failed or
an operator asked; FAILED instead when no device had activated the bundle, so nothing was rolled
back), PAUSED (no new wave starts), ABORTING -> ABORTED (in-flight jobs cancelled before
activation; devices already on the new bundle keep it), SUPERSEDED (a newer rollout took every
device it still held).

A device belongs to one unfinished rollout at a time: a new rollout on devices another one holds
is refused, naming it and them, or with ``supersede`` takes them (they are SUPERSEDED in the older
rollout, whose jobs not yet activated are cancelled).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.commands import cancel_command, enqueue
from cloud.errors import NotFoundError, RolloutError
from cloud.fleet import find_bundle, select_devices
from cloud.plan import RolloutPlan
from cloud.store import BundleRow, CommandRow, Device, EventRow, Rollout, RolloutDevice, now
from contract.jobs import JobState
from contract.manifest import Manifest
from contract.versions import needs_new_agent

RUNNING, PAUSED, SUCCEEDED = "RUNNING", "PAUSED", "SUCCEEDED"
ROLLING_BACK, ROLLED_BACK, ABORTING, ABORTED = "ROLLING_BACK", "ROLLED_BACK", "ABORTING", "ABORTED"
FAILED, SUPERSEDED = "FAILED", "SUPERSEDED"
ACTIVE = (RUNNING, ROLLING_BACK, ABORTING)
FINISHED = frozenset({SUCCEEDED, ROLLED_BACK, ABORTED, FAILED, SUPERSEDED})
OUT_OF_ROLLOUT = frozenset({"SKIPPED", SUPERSEDED})  # device states the rollout no longer acts on or judges
LET_GO = frozenset({"FAILED", "TIMED_OUT", JobState.ROLLED_BACK.value, *OUT_OF_ROLLOUT})  # job ended, bundle off
FAILURES = frozenset({"FAILED", "TIMED_OUT", JobState.ROLLED_BACK.value})
HALTED = frozenset({ROLLED_BACK, FAILED})  # ended after a halt: no device may be left on the bundle
NONE_ACTIVATED = "no device activated the bundle, so none was rolled back"
ALLOWED: dict[str, frozenset[str]] = {  # an operator's action -> the statuses it may be taken in
    "pause": frozenset({RUNNING}), "resume": frozenset({PAUSED}), "abort": frozenset({RUNNING, PAUSED}),
    "rollback": frozenset({RUNNING, PAUSED, SUCCEEDED, ABORTING, ABORTED})}


def start(sessions: sessionmaker[Session], bundle: str, plan: RolloutPlan, rollout_id: str | None = None,
          clock: datetime | None = None, supersede: bool = False) -> str:
    """Create a rollout: pick the devices now and assign each to its wave (stored, so stable).

    Idempotent by ``rollout_id``. Devices already running the bundle are SKIPPED, and so are devices
    whose agent is too old for the cloud's commands or for the bundle's manifest schema
    (``contract.versions.needs_new_agent``: the reason says which protocol each speaks), outside the
    waves; if every selected device is such, it refuses, naming them. Devices another unfinished
    rollout holds make it refuse, unless ``supersede`` (see
    the module's doc).
    """
    with sessions.begin() as session:
        row = find_bundle(session, bundle)
        rollout_id = rollout_id or new_id(clock)
        if session.get(Rollout, rollout_id) is not None:
            return rollout_id
        selected = select_devices(session, plan.selector)
        if not selected:
            raise RolloutError(f"the selector {plan.selector.model_dump(exclude_defaults=True) or 'everything'} "
                               "matches no device: check `coldchain fleet list`")
        schema = row.manifest.get("schema")
        outdated = {d.id: why for d in selected if (why := needs_new_agent(d.protocol, schema)) is not None}
        devices = [d for d in selected if d.id not in outdated]
        if not devices:
            raise RolloutError(f"every selected device {_listed(sorted(outdated))} {next(iter(outdated.values()))}. "
                               "Update their agent first; nothing was sent")
        mismatch = board_mismatch(row, devices)
        if mismatch:
            raise RolloutError(mismatch)
        _take_over(session, rollout_id, [d.id for d in devices], supersede, clock or now())
        sizes = plan.sizes(len(devices))
        session.add(Rollout(id=rollout_id, bundle_sha256=row.sha256, plan=plan.model_dump(mode="json"),
                            status=RUNNING, wave=0, gate_results=[]))
        session.flush()
        for device_id, why in outdated.items():  # never sent anything: it could not understand it
            session.add(RolloutDevice(rollout_id=rollout_id, device_id=device_id, wave=0, state="SKIPPED",
                                      job_id=f"{rollout_id}.{device_id}", reason=f"not deployed: {why}"))
        done = 0
        for wave, size in enumerate(sizes):
            for device in devices[done:size]:
                skip = device.active_sha256 == row.sha256
                session.add(RolloutDevice(
                    rollout_id=rollout_id, device_id=device.id, wave=wave, job_id=f"{rollout_id}.{device.id}",
                    state="SKIPPED" if skip else "PENDING", reason="already runs this bundle" if skip else None,
                    previous=device.active))
            done = size
    return rollout_id


def new_id(clock: datetime | None = None) -> str:
    """A fresh rollout id: ``r<UTC time>-<4 hex digits>``."""
    return f"r{(clock or now()):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


def _listed(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def board_mismatch(row: BundleRow, devices: list[Device]) -> str | None:
    """Why the bundle must not go to some of ``devices`` (their boards are not the bundle's), or None."""
    manifest = Manifest.model_validate(row.manifest)
    wrong: dict[str, list[str]] = {}
    for device in devices:
        if manifest.board_refusal(device.board) is not None:
            wrong.setdefault(device.board or "", []).append(device.id)
    if not wrong:
        return None
    count = sum(len(ids) for ids in wrong.values())
    listed = "; ".join(f"{_listed(ids)} ({board})" for board, ids in sorted(wrong.items()))
    return (f"bundle {row.sha256[:12]} (target {manifest.target.name}) is for boards "
            f"{', '.join(manifest.boards or [])}; {count} selected devices are other boards: {listed}. "
            "Select devices by board (--board) or compile the model for their target; nothing was sent")
def held(session: Session, device_ids: Sequence[str]) -> dict[str, list[RolloutDevice]]:
    """Unfinished rollouts (by id) and the devices of ``device_ids`` each still holds: a job not
    ended, or a bundle it activated and may still roll back."""
    rows = session.scalars(select(RolloutDevice).join(Rollout, Rollout.id == RolloutDevice.rollout_id).where(
        Rollout.status.in_([*ACTIVE, PAUSED]), RolloutDevice.device_id.in_(list(device_ids)),
        RolloutDevice.state.not_in(list(LET_GO)), RolloutDevice.rolled_back.is_(False))
        .order_by(RolloutDevice.rollout_id, RolloutDevice.device_id)).all()
    out: dict[str, list[RolloutDevice]] = {}
    for row in rows:
        out.setdefault(row.rollout_id, []).append(row)
    return out


def _take_over(session: Session, new_id: str, device_ids: list[str], supersede: bool, clock: datetime) -> None:
    """Refuse, or (``supersede``) take the devices older rollouts hold: never two rollouts at once."""
    holding = held(session, device_ids)
    if not holding:
        return
    described = "; ".join(f"rollout {rid} ({session.get(Rollout, rid).status}) holds {len(rows)}: "  # type: ignore[union-attr]
                          + ", ".join(r.device_id for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
                          for rid, rows in holding.items())
    if not supersede:
        raise RolloutError(f"selected devices belong to an unfinished rollout: {described}. Wait for it, abort "
                           "or roll it back, or start this one with --supersede to take the devices over")
    stuck = [rid for rid in holding if session.get(Rollout, rid).status not in (RUNNING, PAUSED)]  # type: ignore[union-attr]
    if stuck:
        raise RolloutError(f"rollout {', '.join(stuck)} is rolling back or aborting its devices; it cannot be "
                           f"superseded until it finished ({described})")
    for rid, rows in holding.items():
        for row in rows:
            if session.get(CommandRow, row.job_id) is not None and not row.activated:  # a deploy may be on its way
                enqueue(session, row.device_id, cancel_command(row.job_id), rid, clock)
            row.state, row.reason = SUPERSEDED, f"superseded by rollout {new_id} (was {row.state})"
        session.flush()
        old = session.get(Rollout, rid)
        left = session.scalars(select(RolloutDevice.device_id).where(
            RolloutDevice.rollout_id == rid, RolloutDevice.state.not_in(list(OUT_OF_ROLLOUT)))).first()
        if old is not None and left is None:
            old.status, old.reason = SUPERSEDED, f"superseded by rollout {new_id}: it took every device"


def failure_reasons(devices: Sequence[RolloutDevice], told: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """The devices' own reasons for failed, timed-out and rolled-back jobs, grouped, most frequent
    first. ``told``: job id -> the reason of its last job event, where the entry has none."""
    counts = Counter(d.reason or (told or {}).get(d.job_id) or f"{d.state}, no reason given"
                     for d in devices if d.state in FAILURES)
    return [(n, why) for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _set(sessions: sessionmaker[Session], rollout_id: str, allowed: frozenset[str], status: str,
         reason: str | None = None) -> Rollout:
    with sessions.begin() as session:
        rollout = get(session, rollout_id)
        if rollout.status not in allowed:
            raise RolloutError(f"rollout {rollout_id} is {rollout.status}; this needs it to be "
                               f"{' or '.join(sorted(allowed))}")
        rollout.status = status
        if reason:
            rollout.reason = reason
        return rollout


def pause(sessions: sessionmaker[Session], rollout_id: str) -> Rollout:
    return _set(sessions, rollout_id, ALLOWED["pause"], PAUSED)


def resume(sessions: sessionmaker[Session], rollout_id: str) -> Rollout:
    return _set(sessions, rollout_id, ALLOWED["resume"], RUNNING)


def abort(sessions: sessionmaker[Session], rollout_id: str, reason: str = "aborted by an operator") -> Rollout:
    return _set(sessions, rollout_id, ALLOWED["abort"], ABORTING, reason)


def rollback(sessions: sessionmaker[Session], rollout_id: str, reason: str = "rolled back by an operator") -> Rollout:
    return _set(sessions, rollout_id, ALLOWED["rollback"], ROLLING_BACK, reason)


NOT_STARTED = frozenset({"PENDING", *LET_GO})


@dataclass(frozen=True)
class RollbackStep:
    """What rolling a rollout back does to one device, computed from what the device reported."""

    device_id: str
    action: str  # "roll back", "cancel", "nothing", "impossible"
    current: dict[str, Any] | None  # the bundle the device reports active (BundleRef as JSON)
    to: dict[str, Any] | None  # the exact bundle it goes back to: its own last known-good
    why: str


def activated_late(session: Session, entry: RolloutDevice) -> None:
    """A device reports it activated the bundle of a rollout that was halted and has ended: its job
    had ended here (TIMED_OUT, say, while it was cut off), and the cancel lost the race with its
    last chunks. The rollout rolls back again, so no device is left on a bundle it says it took back."""
    rollout = session.get(Rollout, entry.rollout_id)
    if rollout is None or rollout.status not in HALTED or entry.rolled_back:
        return
    halted = (rollout.reason or "halted").replace(f"; {NONE_ACTIVATED}", "")
    rollout.status = ROLLING_BACK
    rollout.reason = f"{halted}; {entry.device_id} activated the bundle after its job had ended: rolled back too"


def rollback_step(rollout: Rollout, entry: RolloutDevice, device: Device | None) -> RollbackStep:
    """One device's rollback: back to the known-good bundle *the device* reports (never a bundle it
    marked bad, never "the other slot"), or nothing when it no longer runs the rollout's bundle."""
    current = device.active if device is not None else None
    if entry.state in NOT_STARTED and not entry.activated:
        return RollbackStep(entry.device_id, "nothing", current, None, f"the job is {entry.state}")
    if not entry.activated and entry.state not in (JobState.SUCCEEDED.value, JobState.PROBATION.value):
        return RollbackStep(entry.device_id, "cancel", current, None, "the job has not activated the bundle")
    if device is None or device.active_sha256 != rollout.bundle_sha256:
        return RollbackStep(entry.device_id, "nothing", current, None, "the device no longer runs this bundle")
    known_good = device.previous
    if not known_good or known_good.get("sha256") == rollout.bundle_sha256:
        return RollbackStep(entry.device_id, "impossible", current, None,
                            "the device reports no known-good bundle to go back to: it keeps this one")
    return RollbackStep(entry.device_id, "roll back", current, known_good,
                        f"to its last known-good bundle #{known_good.get('sequence')}")


def rollback_plan(session: Session, rollout_id: str) -> list[RollbackStep]:
    """What ``rollback`` would do, device by device (the CLI shows it before acting)."""
    rollout = get(session, rollout_id)
    entries = session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
                              .order_by(RolloutDevice.wave, RolloutDevice.device_id)).all()
    return [rollback_step(rollout, e, session.get(Device, e.device_id)) for e in entries]


def get(session: Session, rollout_id: str) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        known = ", ".join(session.scalars(select(Rollout.id).order_by(Rollout.created_at.desc()).limit(5)).all())
        raise NotFoundError(f"no rollout {rollout_id!r}" + (f"; recent ones: {known}" if known else ""))
    return rollout


@dataclass(frozen=True)
class RolloutView:
    rollout: Rollout
    bundle: BundleRow | None
    devices: list[RolloutDevice]
    told: dict[str, str]  # job id -> reason of its last job event (for entries without a reason)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            key = "ROLLED_BACK" if d.rolled_back else d.state
            out[key] = out.get(key, 0) + 1
        return out

    def waves(self) -> int:
        return 1 + max((d.wave for d in self.devices), default=0)

    def reasons(self) -> list[tuple[int, str]]:
        return failure_reasons(self.devices, self.told)


def view(session: Session, rollout_id: str) -> RolloutView:
    rollout = get(session, rollout_id)
    devices = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
                                   .order_by(RolloutDevice.wave, RolloutDevice.device_id)).all())
    silent = [d.job_id for d in devices if d.state in FAILURES and not d.reason]
    told = {str(job): str(why) for job, why in session.execute(
        select(EventRow.job_id, EventRow.reason).where(EventRow.job_id.in_(silent), EventRow.reason.is_not(None))
        .order_by(EventRow.id))} if silent else {}
    return RolloutView(rollout, session.get(BundleRow, rollout.bundle_sha256), devices, told)


def recent(session: Session, limit: int = 20) -> list[Rollout]:
    return list(session.scalars(select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)).all())
