"""Reported device state: retained on ``devices/{id}/state``; the last will sets ``online`` false.

Version 2 adds ``protocol``, the agent protocol the device speaks; the cloud still reads version 1
(agents before issue 13), whose protocol is 1. Version 3 lets a job be READY; version 4
(``contract.versions.STATE_SCHEMA_VERSION``) is what agents of protocol 3 send (the same fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from contract.base import ContractModel, Identifier, JobId, Message, Name, utc_now
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


class DeviceState(Message):
    schema_version: int = STATE_SCHEMA_VERSION
    device_id: Identifier
    online: bool
    ts: datetime = Field(default_factory=utc_now)
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

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in STATE_VERSIONS:
            raise ValueError(f"schema_version {value} is not supported: this coldchain reads device states of "
                             f"versions {', '.join(map(str, STATE_VERSIONS))}; upgrade the older side")
        return value

    @model_validator(mode="before")
    @classmethod
    def _version_1_protocol(cls, data: Any) -> Any:
        """A version 1 state names no protocol: it is from an agent of protocol 1."""
        if isinstance(data, dict) and data.get("schema_version") == 1:
            if "protocol" in data:
                raise ValueError("a version 1 state has no protocol field (it came with version 2)")
            return {**data, "protocol": LEGACY_AGENT_PROTOCOL}
        return data

    @model_serializer(mode="wrap")
    def _as_its_version(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A version 1 state dumps as an agent of protocol 1 wrote it: without ``protocol``."""
        data: dict[str, Any] = handler(self)
        if self.schema_version == 1:
            data.pop("protocol", None)
        return data


def offline(device_id: str) -> DeviceState:
    """The last-will payload: only identity and ``online=False``."""
    return DeviceState(device_id=device_id, online=False)
