"""The deploy job state machine shared by the agent (which runs it) and the cloud (which watches it)."""

from __future__ import annotations

from datetime import datetime

from contract.compat import StrEnum
from contract.errors import ContractError


class JobState(StrEnum):
    QUEUED = "QUEUED"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    INSTALLING = "INSTALLING"
    SELF_TEST = "SELF_TEST"
    SHADOW = "SHADOW"
    READY = "READY"  # verified; waits for the firmware's release or the activation window (reason says which)
    ACTIVATING = "ACTIVATING"
    PROBATION = "PROBATION"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK})

_S = JobState
_FORWARD: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.DOWNLOADING}),
    _S.DOWNLOADING: frozenset({_S.VERIFYING}),
    _S.VERIFYING: frozenset({_S.INSTALLING}),
    _S.INSTALLING: frozenset({_S.SELF_TEST}),
    _S.SELF_TEST: frozenset({_S.SHADOW, _S.READY, _S.ACTIVATING}),
    _S.SHADOW: frozenset({_S.READY, _S.ACTIVATING}),
    _S.READY: frozenset({_S.ACTIVATING}),
    _S.ACTIVATING: frozenset({_S.PROBATION}),
    _S.PROBATION: frozenset({_S.SUCCEEDED, _S.ROLLED_BACK}),
}


def allowed(current: JobState, new: JobState) -> bool:
    """Whether a job may move from ``current`` to ``new``.

    Any non-terminal state may fail; once the new bundle is active (ACTIVATING onwards) a
    failure is a ROLLED_BACK, and a finished job may be rolled back later by command.
    """
    if current is new:
        return False
    if new is JobState.FAILED:
        return not current.terminal
    if new is JobState.ROLLED_BACK:
        return current in (JobState.ACTIVATING, JobState.PROBATION, JobState.SUCCEEDED)
    return new in _FORWARD.get(current, frozenset())


PROBATION_WAIT = "probation: waiting for live inferences"
"""How a job in PROBATION says it is extended for want of live evidence (too few inferences when its
``probation_s`` ended, e.g. an idle door-triggered device): the cloud then gives it ``evidence_s``
instead of the wave's timeout, as it gives READY ``ready_s``. A reason, not a field: no version changes
(an older cloud shows it; an older agent never sends it)."""


def probation_wait(seen: int, needed: int, until: datetime) -> str:
    """``probation: waiting for live inferences: 3 of 20 seen, up to 2026-12-01 21:40 UTC``."""
    return f"{PROBATION_WAIT}: {seen} of {needed} seen, up to {until:%Y-%m-%d %H:%M} UTC"


def waits_for_evidence(state: str | None, reason: str | None) -> bool:
    """Whether a job reported (``state``, ``reason``) is in PROBATION, extended for want of evidence."""
    return state == JobState.PROBATION.value and (reason or "").startswith(PROBATION_WAIT)


def check_transition(current: JobState, new: JobState) -> JobState:
    if not allowed(current, new):
        raise ContractError(f"a deploy job cannot move from {current.value} to {new.value}")
    return new
