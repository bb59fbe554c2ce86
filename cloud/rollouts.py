"""Operator actions on rollouts: start, pause, resume, abort, roll back. Each only writes the
store; the controller's next ``step()`` (in the running cloud) acts on it, so the CLI, the HTTP API
and the controller never need to share memory.

Rollout status: RUNNING -> SUCCEEDED, or RUNNING -> ROLLING_BACK -> ROLLED_BACK (a gate failed or
an operator asked), PAUSED (no new wave starts), ABORTING -> ABORTED (in-flight jobs cancelled
before activation; devices already on the new bundle keep it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import NotFoundError, RolloutError
from cloud.fleet import find_bundle, select_devices
from cloud.plan import RolloutPlan
from cloud.store import BundleRow, Device, Rollout, RolloutDevice, now
from contract.jobs import JobState
from contract.manifest import Manifest

RUNNING, PAUSED, SUCCEEDED = "RUNNING", "PAUSED", "SUCCEEDED"
ROLLING_BACK, ROLLED_BACK, ABORTING, ABORTED = "ROLLING_BACK", "ROLLED_BACK", "ABORTING", "ABORTED"
ACTIVE = (RUNNING, ROLLING_BACK, ABORTING)
FINISHED = frozenset({SUCCEEDED, ROLLED_BACK, ABORTED})


def start(sessions: sessionmaker[Session], bundle: str, plan: RolloutPlan, rollout_id: str | None = None,
          clock: datetime | None = None) -> str:
    """Create a rollout: pick the devices now and assign each to its wave (stored, so stable).

    Idempotent by ``rollout_id``. Devices already running the bundle are SKIPPED.
    """
    with sessions.begin() as session:
        row = find_bundle(session, bundle)
        rollout_id = rollout_id or f"r{(clock or now()):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
        if session.get(Rollout, rollout_id) is not None:
            return rollout_id
        busy = session.scalars(select(Rollout.id).where(Rollout.status.in_([*ACTIVE, PAUSED]))).all()
        devices = select_devices(session, plan.selector)
        if not devices:
            raise RolloutError(f"the selector {plan.selector.model_dump(exclude_defaults=True) or 'everything'} "
                               "matches no device: check `coldchain fleet list`")
        mismatch = board_mismatch(row, devices)
        if mismatch:
            raise RolloutError(mismatch)
        taken = set(session.scalars(select(RolloutDevice.device_id).where(RolloutDevice.rollout_id.in_(busy),
                                                                         RolloutDevice.state == "PENDING")).all())
        waiting = taken & {d.id for d in devices}
        if waiting:
            raise RolloutError(f"{len(waiting)} selected devices wait in unfinished rollouts "
                               f"({', '.join(busy)}): finish, abort or roll those back first")
        sizes = plan.sizes(len(devices))
        session.add(Rollout(id=rollout_id, bundle_sha256=row.sha256, plan=plan.model_dump(mode="json"),
                            status=RUNNING, wave=0, gate_results=[]))
        session.flush()
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
    listed = "; ".join(f"{', '.join(ids[:10])}{f' and {len(ids) - 10} more' if len(ids) > 10 else ''} ({board})"
                       for board, ids in sorted(wrong.items()))
    return (f"bundle {row.sha256[:12]} (target {manifest.target.name}) is for boards "
            f"{', '.join(manifest.boards or [])}; {count} selected devices are other boards: {listed}. "
            "Select devices by board (--board) or compile the model for their target; nothing was sent")


def _set(sessions: sessionmaker[Session], rollout_id: str, allowed: set[str], status: str,
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
    return _set(sessions, rollout_id, {RUNNING}, PAUSED)


def resume(sessions: sessionmaker[Session], rollout_id: str) -> Rollout:
    return _set(sessions, rollout_id, {PAUSED}, RUNNING)


def abort(sessions: sessionmaker[Session], rollout_id: str, reason: str = "aborted by an operator") -> Rollout:
    return _set(sessions, rollout_id, {RUNNING, PAUSED}, ABORTING, reason)


def rollback(sessions: sessionmaker[Session], rollout_id: str, reason: str = "rolled back by an operator") -> Rollout:
    return _set(sessions, rollout_id, {RUNNING, PAUSED, SUCCEEDED, ABORTING, ABORTED}, ROLLING_BACK, reason)


NOT_STARTED = frozenset({"PENDING", "SKIPPED", "FAILED", "TIMED_OUT", JobState.ROLLED_BACK.value})


@dataclass(frozen=True)
class RollbackStep:
    """What rolling a rollout back does to one device, computed from what the device reported."""

    device_id: str
    action: str  # "roll back", "cancel", "nothing", "impossible"
    current: dict[str, Any] | None  # the bundle the device reports active (BundleRef as JSON)
    to: dict[str, Any] | None  # the exact bundle it goes back to: its own last known-good
    why: str


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

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            key = "ROLLED_BACK" if d.rolled_back else d.state
            out[key] = out.get(key, 0) + 1
        return out

    def waves(self) -> int:
        return 1 + max((d.wave for d in self.devices), default=0)


def view(session: Session, rollout_id: str) -> RolloutView:
    rollout = get(session, rollout_id)
    devices = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
                                   .order_by(RolloutDevice.wave, RolloutDevice.device_id)).all())
    return RolloutView(rollout, session.get(BundleRow, rollout.bundle_sha256), devices)


def recent(session: Session, limit: int = 20) -> list[Rollout]:
    return list(session.scalars(select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)).all())
