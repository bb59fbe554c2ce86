"""Persisted deploy jobs: one JSON file per job, replaced atomically at every transition, so a
restart resumes each unfinished job from the state it had reached."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.slots import atomic_write, read_json
from contract import COMMAND_SCHEMA_VERSION
from contract.jobs import JobState, check_transition


@dataclass
class JobRecord:
    job_id: str
    command: dict[str, Any]  # the command as received (JSON-compatible)
    state: JobState = JobState.QUEUED
    reason: str | None = None
    slot: str | None = None  # the slot the bundle was installed into
    manifest_sha256: str | None = None
    sequence: int | None = None
    probation_started: float | None = None  # Unix time
    shadow_started: float | None = None  # Unix time
    ready_started: float | None = None  # Unix time: verified, waiting for the firmware or the window
    predecessor_sha256: str | None = None  # the bundle that was active when this one was installed
    install_ms: float | None = None  # the candidate's model latency at install, paired with
    predecessor_ms: float | None = None  # ... the predecessor's, timed on this device in the same rounds
    evidence: dict[str, Any] | None = None  # what probation saw so far (``agent.probation.Evidence``)
    history: list[tuple[str, str | None, str]] = field(default_factory=list)  # (state, reason, UTC time)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class JobStore:
    """The jobs of this device, read from disk once (then served from memory: chunks, state
    publishes and telemetry windows never re-read them). A job file that does not parse is set
    aside (``*.damaged-<time>``) and listed in ``damaged``; finished jobs beyond ``keep`` are pruned."""

    def __init__(self, data_dir: Path, keep: int = 50, repair: bool = True) -> None:
        self.dir = data_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep, self.repair = keep, repair  # repair=False: read-only (``agent status`` beside a running agent)
        self.damaged: list[str] = []  # what was set aside at load, for the agent to report
        self._records: dict[str, JobRecord] = {}
        for path in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            record = self._load(path)
            if record is not None:
                self._records[record.job_id] = record

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _load(self, path: Path) -> JobRecord | None:
        try:
            data = read_json(path)
            data["state"] = JobState(data["state"])
            data["history"] = [tuple(h) for h in data.get("history", [])]
            if data["command"].get("schema_version") == 1:  # accepted before signed commands: still this job's
                data["command"] = {**data["command"], "schema_version": COMMAND_SCHEMA_VERSION}
            return JobRecord(**data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            moved = path.with_name(f"{path.name}.damaged-{int(time.time())}") if self.repair else path
            try:
                path.replace(moved)
            except OSError:
                moved = path
            self.damaged.append(f"job file {path.name} was unreadable ({type(exc).__name__}); set aside as "
                                f"{moved.name}")
            return None

    def save(self, record: JobRecord) -> None:
        data = asdict(record)
        data["state"] = record.state.value
        atomic_write(self._path(record.job_id), json.dumps(data, sort_keys=True).encode())
        self._records.pop(record.job_id, None)
        self._records[record.job_id] = record  # most recently changed last
        if record.terminal:
            self._prune()

    def _prune(self) -> None:
        finished = [r for r in self._records.values() if r.terminal]
        for old in finished[: max(0, len(finished) - self.keep)]:
            self._path(old.job_id).unlink(missing_ok=True)
            del self._records[old.job_id]

    def get(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self._records.values() if not r.terminal]

    def all(self) -> list[JobRecord]:
        return list(self._records.values())

    def move(self, record: JobRecord, state: JobState, reason: str | None = None) -> JobRecord:
        """Check the transition against the contract, record it durably, and return the record."""
        check_transition(record.state, state)
        record.state = state
        record.reason = reason
        record.history.append((state.value, reason, datetime.now(timezone.utc).isoformat()))
        self.save(record)
        return record
