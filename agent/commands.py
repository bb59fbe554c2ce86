"""Commands a device acts on once. The cloud re-sends a deploy, cancel or rollback until the
device's job state shows its job id; a command under a job id this device already knows is
answered with that job's state (a job event under the command's job id) and never acted on again.

Deploy jobs are remembered by the job store; the outcome of every finished job, cancel and
rollback (and a cancel that arrived before its deploy) by :class:`CommandLog`, a small persisted
file, so a restart or a pruned job file does not make a re-sent command act twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.deploy import Deployer
from agent.errors import SlotError
from agent.slots import atomic_write
from contract.commands import CancelCommand, RollbackCommand, authorization_bytes
from contract.errors import ContractError
from contract.jobs import JobState
from contract.signing import Role, TrustStore, verify_signature

Outcome = tuple[JobState, str | None]


class CommandLog:
    """Job id -> its final state and reason, newest ``keep`` kept, in ``commands.json``. A file
    that does not parse is set aside and the log starts empty (``damaged`` says so)."""

    def __init__(self, data_dir: Path, keep: int = 1000) -> None:
        self.path, self.keep = data_dir / "commands.json", keep
        self.damaged: str | None = None
        self._entries: dict[str, tuple[str, str | None]] = {}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                self._entries = {str(k): (JobState(v[0]).value, None if v[1] is None else str(v[1]))
                                 for k, v in loaded.items()}
            except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                moved = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
                self.path.replace(moved)
                self.damaged = f"the command log was unreadable ({type(exc).__name__}); set aside as {moved.name}"

    def get(self, job_id: str) -> Outcome | None:
        found = self._entries.get(job_id)
        return None if found is None else (JobState(found[0]), found[1])

    def record(self, job_id: str, state: JobState, reason: str | None) -> None:
        if self._entries.get(job_id) == (state.value, reason):
            return
        self._entries.pop(job_id, None)
        self._entries[job_id] = (state.value, reason)
        for old in list(self._entries)[:-self.keep]:
            del self._entries[old]
        atomic_write(self.path, json.dumps(self._entries).encode())


def cancel(deployer: Deployer, log: CommandLog, command: CancelCommand) -> Outcome:
    """Stop the target job if it has not activated its bundle. A target not known here yet (the
    cancel overtook its deploy) is remembered as cancelled, so the deploy never runs."""
    target = command.target_job_id
    record = deployer.cancel(target, f"job {command.job_id} from the cloud")
    if record is None:
        log.record(target, JobState.FAILED, f"cancelled by {command.job_id} before the deploy arrived")
        return JobState.SUCCEEDED, f"job {target} was not known here: it will not run if it arrives"
    if record.state is JobState.FAILED:
        return JobState.SUCCEEDED, f"job {target} cancelled (it is FAILED: {record.reason})"
    return JobState.FAILED, f"job {target} is {record.state.value}: past activation, left alone"


def roll_back(deployer: Deployer, trust: TrustStore, command: RollbackCommand) -> Outcome:
    """Back to a known-good bundle on this device (an older sequence: only with an operator's
    signature). SUCCEEDED with what was done, or FAILED with why it was refused."""
    if command.authorization is None:
        return JobState.FAILED, ("a rollback installs an older bundle and must be signed by an operator key this "
                                 "device trusts (authorization missing)")
    try:
        verify_signature(authorization_bytes(command), command.authorization.key_id,
                         command.authorization.signature, trust, Role.OPERATOR)
    except ContractError as exc:
        return JobState.FAILED, f"rollback authorization does not verify: {exc}"
    if command.to is not None and command.to.sha256 == deployer.slots.pointer().active_sha256:
        return JobState.SUCCEEDED, "already active: nothing to do"
    try:
        return JobState.SUCCEEDED, deployer.roll_back_active(f"rolled back by the cloud: {command.reason}",
                                                             None if command.to is None else command.to.sha256)
    except SlotError as exc:  # no known-good bundle to go to: the active one stays, and the cloud hears why
        return JobState.FAILED, str(exc)
