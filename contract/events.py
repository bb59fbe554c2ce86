"""Device events on ``devices/{id}/events``: job progress, errors, self-test and shadow results."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, field_validator, model_validator

from contract import EVENT_SCHEMA_VERSION, EVENT_VERSIONS
from contract.base import MAX_INT, Count, Identifier, JobId, Message, Name, Text, UtcDatetime, decode_union, utc_now
from contract.jobs import JobState

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Event(Message):
    schema_version: int = EVENT_SCHEMA_VERSION
    device_id: Identifier
    ts: UtcDatetime = Field(default_factory=utc_now)
    seq: Count = 0

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in EVENT_VERSIONS:
            raise ValueError(f"schema_version {value} is not supported: this coldchain reads events of versions "
                             f"{', '.join(map(str, EVENT_VERSIONS))}; upgrade the older side")
        return value


class JobEvent(_Event):
    """A deploy job entered ``state``; ``reason`` says why (always set for FAILED/ROLLED_BACK)."""

    type: Literal["job"] = "job"
    job_id: JobId
    state: JobState
    reason: Text | None = None
    progress: Fraction | None = None  # download progress, 0..1

    @model_validator(mode="after")
    def _state_of_its_version(self) -> JobEvent:
        if self.schema_version == 1 and self.state is JobState.READY:
            raise ValueError("state READY arrived with event version 2; a version 1 event cannot carry it")
        return self


class ErrorEvent(_Event):
    """Something the device refused or could not do, outside a job (e.g. a malformed command)."""

    type: Literal["error"] = "error"
    code: Name
    message: Text
    topic: Text | None = None
    job_id: JobId | None = None


class SelfTestEvent(_Event):
    type: Literal["self_test"] = "self_test"
    job_id: JobId
    passed: bool
    cases: Count
    max_abs_error: Annotated[float, Field(ge=0)]
    tolerance: Annotated[float, Field(ge=0)]


class ShadowEvent(_Event):
    """The candidate ran beside the active model on live frames; how often they agreed."""

    type: Literal["shadow"] = "shadow"
    job_id: JobId
    frames: Count
    agreement: Fraction


class ProfileEvent(_Event):
    """The answer to a profile command: the active model's latency measured on the device."""

    type: Literal["profile"] = "profile"
    job_id: JobId
    bundle_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    runtime: Name
    iterations: Annotated[int, Field(ge=1, le=MAX_INT)]
    p50_ms: Annotated[float, Field(ge=0)]
    p95_ms: Annotated[float, Field(ge=0)]
    mean_ms: Annotated[float, Field(ge=0)]


Event = Annotated[JobEvent | ErrorEvent | SelfTestEvent | ShadowEvent | ProfileEvent, Field(discriminator="type")]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def decode_event(payload: bytes | str) -> Event:
    return decode_union(EVENT, payload, "event")
