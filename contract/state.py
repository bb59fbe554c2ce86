"""Reported device state: retained on ``devices/{id}/state``; the last will sets ``online`` false.

Version 2 adds ``protocol``, the agent protocol the device speaks; the cloud still reads version 1
(agents before issue 13), whose protocol is 1. Version 3 lets a job be READY; version 4 is what agents
of protocol 3 send (the same fields). Version 5 (``contract.versions.STATE_SCHEMA_VERSION``) adds
``faults``: what is wrong on the device now (its camera is gone, its spool is full), so the fleet
does not show such a device as healthy once the error event has scrolled away. The agent publishes a
new state when a fault starts and when it clears, never on each failed retry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from contract.base import ContractModel, Identifier, JobId, Message, Name, UtcDatetime, utc_now
from contract.common import BundleRef, RuntimeInfo
from contract.compat import StrEnum
from contract.jobs import JobState
from contract.versions import AGENT_PROTOCOL, LEGACY_AGENT_PROTOCOL, STATE_SCHEMA_VERSION, STATE_VERSIONS


class SlotStatus(StrEnum):
    """What a device knows of the bundle in one of its slots (which one is active is ``active``)."""

    EMPTY = "empty"
    INSTALLING = "installing"  # being overwritten: its content belongs to no bundle
    CANDIDATE = "candidate"  # installed and verified, not yet proven on this device
    GOOD = "good"  # passed probation on this device: a rollback may return to it
    BAD = "bad"  # failed its self-test or probation here, or was rolled back: never re-activated by a rollback


class Slot(ContractModel):
    status: SlotStatus
    bundle: BundleRef | None = None


class JobSummary(ContractModel):
    job_id: JobId
    state: JobState


class FaultCode(StrEnum):
    """What can be wrong on a device, as its state reports it (a closed set: a new code is a new state version)."""

    SOURCE_UNAVAILABLE = "source_unavailable"  # the frame source cannot be opened (camera gone, folder unreadable)
    SPOOL_FULL = "spool_full"  # the telemetry spool is at its limit: the oldest unsent windows are being dropped


MAX_FAULT_MESSAGE = 512


class Fault(ContractModel):
    """A fault going on now: since when (the device's clock) and what the agent last said about it."""

    code: FaultCode
    since: UtcDatetime
    message: Annotated[str, StringConstraints(max_length=MAX_FAULT_MESSAGE)] = ""


ADDED_IN = {"protocol": 2, "faults": 5}
"""The state's fields that older versions do not have, and the version that added each."""


class DeviceState(Message):
    schema_version: int = STATE_SCHEMA_VERSION
    device_id: Identifier
    online: bool
    ts: UtcDatetime = Field(default_factory=utc_now)
    board: Name | None = None
    agent_version: Name | None = None
    runtimes: Annotated[list[RuntimeInfo], Field(max_length=8)] = []
    active: BundleRef | None = None
    previous: BundleRef | None = None  # the known-good bundle a rollback would return to, if any
    slots: dict[Literal["a", "b"], Slot] = {}
    groups: Annotated[list[Identifier], Field(max_length=32)] = []
    tags: Annotated[dict[Identifier, Name], Field(max_length=64)] = {}
    job: JobSummary | None = None
    protocol: Annotated[int, Field(ge=1, le=1000)] = AGENT_PROTOCOL  # contract.versions; not on the wire in v1
    faults: Annotated[list[Fault], Field(max_length=len(FaultCode))] = []  # the current ones; from version 5

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in STATE_VERSIONS:
            raise ValueError(f"schema_version {value} is not supported: this coldchain reads device states of "
                             f"versions {', '.join(map(str, STATE_VERSIONS))}; upgrade the older side")
        return value

    @field_validator("faults")
    @classmethod
    def _one_per_code(cls, value: list[Fault]) -> list[Fault]:
        codes = [f.code for f in value]
        for code in codes:
            if codes.count(code) > 1:
                raise ValueError(f"{code} is reported twice: a device has each fault at most once")
        return value

    @model_validator(mode="before")
    @classmethod
    def _older_versions(cls, data: Any) -> Any:
        """An older state has none of the fields added after its version (a version 1 state names no
        protocol: it is from an agent of protocol 1; before version 5 no state reports faults)."""
        if not isinstance(data, dict) or not isinstance(version := data.get("schema_version"), int):
            return data
        for name, added in ADDED_IN.items():
            if version < added and name in data:
                raise ValueError(f"a version {version} state has no {name} field (it came with version {added})")
        return {**data, "protocol": LEGACY_AGENT_PROTOCOL} if version == 1 else data

    @model_serializer(mode="wrap")
    def _as_its_version(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An older state dumps as its agent wrote it: without the fields added after its version."""
        data: dict[str, Any] = handler(self)
        for name, added in ADDED_IN.items():
            if self.schema_version < added:
                data.pop(name, None)
        return data

def offline(device_id: str) -> DeviceState:
    """The last-will payload: only identity and ``online=False``."""
    return DeviceState(device_id=device_id, online=False)
