"""Commands a device acts on once. The cloud re-sends a command until the device's job state
shows its job id; a command under a job id this device already knows, with the same content, is
answered with that job's state (a job event under the command's job id) and never acted on again
(what is refused, and why: :mod:`agent.gate`).

Deploy jobs are remembered by the job store; the outcome of every finished job, cancel and
rollback (and a cancel that arrived before its deploy) by :class:`CommandLog`, a small persisted
file, so a restart or a pruned job file does not make a re-sent command act twice."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig
from agent.deploy import Deployer
from agent.errors import SlotError
from agent.model import LoadedBundle
from agent.slots import atomic_write, read_json
from contract.commands import CancelCommand, ProfileCommand, RollbackCommand, SetConfigCommand
from contract.events import ProfileEvent
from contract.jobs import JobState

if TYPE_CHECKING:
    import numpy as np
else:
    from agent.lazy import lazy

    np = lazy("numpy")

Outcome = tuple[JobState, str | None]
_Entry = tuple[str | None, str | None, str | None]  # final state (None: acted on, not finished), reason, content


class CommandLog:
    """Job id -> its final state, reason and content hash (``contract.commands.content_sha256``),
    newest ``keep`` kept, and the newest ``issued_at`` of a verified command (the device's trusted
    time: see :mod:`agent.gate`), in ``commands.json``. A file that does not parse is set aside and
    the log starts empty (``damaged`` says so)."""

    def __init__(self, data_dir: Path, keep: int = 1000) -> None:
        self.path, self.keep = data_dir / "commands.json", keep
        self.damaged: str | None = None
        self._entries: dict[str, _Entry] = {}
        self.newest_issued: datetime | None = None
        if self.path.exists():
            try:
                self._entries, self.newest_issued = _parse(read_json(self.path))
            except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                moved = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
                self.path.replace(moved)
                self.damaged = f"the command log was unreadable ({type(exc).__name__}); set aside as {moved.name}"

    def get(self, job_id: str) -> Outcome | None:
        found = self._entries.get(job_id)
        return None if found is None or found[0] is None else (JobState(found[0]), found[1])

    def content(self, job_id: str) -> str | None:
        found = self._entries.get(job_id)
        return None if found is None else found[2]

    def accept(self, job_id: str, content: str, issued_at: datetime) -> None:
        """A verified command is acted on: remember its content (and its time as trusted)."""
        self.saw(issued_at, write=False)
        self._put(job_id, (None, None, content))

    def saw(self, issued_at: datetime, write: bool = True) -> None:
        """A verified command was issued at ``issued_at``: the trusted time is at least that."""
        if self.newest_issued is None or issued_at > self.newest_issued:
            self.newest_issued = issued_at
            if write:
                self._write()

    def record(self, job_id: str, state: JobState, reason: str | None) -> None:
        before = self._entries.get(job_id)
        if before is not None and before[:2] == (state.value, reason):
            return
        self._put(job_id, (state.value, reason, None if before is None else before[2]))

    def _put(self, job_id: str, entry: _Entry) -> None:
        self._entries.pop(job_id, None)
        self._entries[job_id] = entry
        for old in list(self._entries)[:-self.keep]:
            del self._entries[old]
        self._write()

    def _write(self) -> None:
        newest = None if self.newest_issued is None else self.newest_issued.isoformat()
        atomic_write(self.path, json.dumps({"version": 2, "newest_issued_at": newest,
                                            "jobs": {k: list(v) for k, v in self._entries.items()}}).encode())


def _parse(loaded: dict[str, Any]) -> tuple[dict[str, _Entry], datetime | None]:
    """Version 2 (``{"version": 2, "newest_issued_at", "jobs"}``), or the flat job map before it."""
    if loaded.get("version") != 2:  # before signed commands: {job id: [state, reason]}
        return {str(k): (JobState(v[0]).value, _opt(v[1]), None) for k, v in loaded.items()}, None
    newest = loaded["newest_issued_at"]
    entries = {str(k): (None if v[0] is None else JobState(v[0]).value, _opt(v[1]), _opt(v[2]))
               for k, v in loaded["jobs"].items()}
    return entries, None if newest is None else datetime.fromisoformat(newest)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


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


def roll_back(deployer: Deployer, command: RollbackCommand) -> Outcome:
    """Back to a known-good bundle on this device (the gate, ``agent.gate``, checked the operator's
    signature). SUCCEEDED with what was done, or FAILED with why it was refused."""
    if command.to is not None and command.to.sha256 == deployer.slots.pointer().active_sha256:
        return JobState.SUCCEEDED, "already active: nothing to do"
    try:
        return JobState.SUCCEEDED, deployer.roll_back_active(f"rolled back by the cloud: {command.reason}",
                                                             None if command.to is None else command.to.sha256)
    except SlotError as exc:  # no known-good bundle to go to: the active one stays, and the cloud hears why
        return JobState.FAILED, str(exc)


def set_config(config: AgentConfig, next_inference: float, command: SetConfigCommand,
               now: float | None = None) -> tuple[AgentConfig, float, str]:
    """The configuration after ``command``, when the next inference is due (a shorter interval takes
    effect at once: the inference scheduled under the old one is moved forward), and what changed."""
    updates = {k: v for k, v in (("inference_interval_s", command.inference_interval_s),
                                 ("telemetry_window_s", command.telemetry_window_s)) if v is not None}
    if command.inference_interval_s is not None:
        next_inference = min(next_inference, (time.monotonic() if now is None else now) + command.inference_interval_s)
    applied = ", ".join(f"{k}={v:g}" for k, v in updates.items()) or "nothing to change"
    return config.model_copy(update=updates), next_inference, f"applied {applied}"


def profile(loaded: LoadedBundle, available: dict[Any, str], command: ProfileCommand, device_id: str,
            seq: int) -> ProfileEvent:
    """Time the active model (model only, after warm-up): the answer to a profile command."""
    times = loaded.time_runs(None, command.warmup, command.iterations)
    name = loaded.manifest.target.runtime.name
    return ProfileEvent(device_id=device_id, seq=seq, job_id=command.job_id, bundle_sha256=loaded.sha256,
                        runtime=f"{name.value} {available.get(name, '?')}", iterations=command.iterations,
                        p50_ms=float(np.percentile(times, 50)), p95_ms=float(np.percentile(times, 95)),
                        mean_ms=float(np.mean(times)))
