"""Persisted deploy jobs: one JSON file per job, replaced atomically at every transition, so a
restart resumes each unfinished job from the state it had reached."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.slots import atomic_write
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
    predecessor_sha256: str | None = None  # the bundle that was active when this one was installed
    install_ms: float | None = None  # the candidate's model latency at install, paired with
    predecessor_ms: float | None = None  # ... the predecessor's, timed on this device in the same rounds
    history: list[tuple[str, str | None, str]] = field(default_factory=list)  # (state, reason, UTC time)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def save(self, record: JobRecord) -> None:
        data = asdict(record)
        data["state"] = record.state.value
        atomic_write(self._path(record.job_id), json.dumps(data, sort_keys=True).encode())

    def get(self, job_id: str) -> JobRecord | None:
        path = self._path(job_id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            data["state"] = JobState(data["state"])
            data["history"] = [tuple(h) for h in data.get("history", [])]
            return JobRecord(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise AgentError(f"job file {path} is unreadable: {exc}") from exc

    def unfinished(self) -> list[JobRecord]:
        records = [self.get(p.stem) for p in sorted(self.dir.glob("*.json"))]
        return [r for r in records if r is not None and not r.terminal]

    def all(self) -> list[JobRecord]:
        return [r for p in sorted(self.dir.glob("*.json")) if (r := self.get(p.stem)) is not None]

    def move(self, record: JobRecord, state: JobState, reason: str | None = None) -> JobRecord:
        """Check the transition against the contract, record it durably, and return the record."""
        check_transition(record.state, state)
        record.state = state
        record.reason = reason
        record.history.append((state.value, reason, datetime.now(UTC).isoformat()))
        self.save(record)
        return record
