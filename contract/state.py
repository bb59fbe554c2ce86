"""Reported device state: retained on ``devices/{id}/state``; the last will sets ``online`` false."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from contract.base import ContractModel, Identifier, JobId, Message, Name, utc_now
from contract.common import BundleRef, RuntimeInfo
from contract.jobs import JobState


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


def offline(device_id: str) -> DeviceState:
    """The last-will payload: only identity and ``online=False``."""
    return DeviceState(device_id=device_id, online=False)
