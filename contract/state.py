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
    EMPTY = "empty"
    INSTALLING = "installing"
    READY = "ready"
    ACTIVE = "active"


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
    previous: BundleRef | None = None
    slots: dict[Literal["a", "b"], Slot] = {}
    groups: Annotated[list[Identifier], Field(max_length=32)] = []
    tags: Annotated[dict[Identifier, Name], Field(max_length=64)] = {}
    job: JobSummary | None = None


def offline(device_id: str) -> DeviceState:
    """The last-will payload: only identity and ``online=False``."""
    return DeviceState(device_id=device_id, online=False)
