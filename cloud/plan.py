"""A rollout plan: which devices (selector), in which waves, behind which gates, with which
timeouts. Every knob is a typed, validated field; ``parse_waves("1,10%,50%,100%")`` reads the
operator's short form."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.topics import check_id

_WAVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Selector(_Frozen):
    """Devices that match every given criterion (an empty selector matches the whole fleet)."""

    groups: list[str] = []  # any of these groups
    boards: list[str] = []  # any of these boards
    tags: dict[str, str] = {}  # all of these tags
    devices: list[str] = []  # any of these ids

    @field_validator("groups", "devices")
    @classmethod
    def _ids(cls, values: list[str]) -> list[str]:
        return [check_id(v) for v in values]


class Wave(_Frozen):
    """Cumulative size after this wave: ``count`` devices, or ``percent`` of the selected fleet."""

    count: Annotated[int, Field(ge=1)] | None = None
    percent: Annotated[float, Field(gt=0, le=100)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Wave:
        if (self.count is None) == (self.percent is None):
            raise ValueError("a wave is either a device count or a percentage")
        return self

    def size(self, fleet: int) -> int:
        if self.count is not None:
            return min(self.count, fleet)
        return min(fleet, max(1, math.ceil(fleet * (self.percent or 0) / 100 - 1e-9)))

    def label(self) -> str:
        return f"{self.count}" if self.count is not None else f"{self.percent:g}%"


def parse_waves(text: str) -> list[Wave]:
    """``"1,10%,50%,100%"`` -> waves; sizes are cumulative and must grow."""
    waves = []
    for part in text.split(","):
        match = _WAVE.match(part)
        if not match:
            raise ValueError(f"wave {part!r} is neither a device count (e.g. 1) nor a percentage (e.g. 10%)")
        value, percent = match.groups()
        waves.append(Wave(percent=float(value)) if percent else Wave(count=int(float(value))))
    return waves


class Gates(_Frozen):
    """What a wave must show before the next one starts. ``None`` switches a gate off."""

    min_success_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0  # jobs SUCCEEDED / devices in the wave
    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = 0.02  # errors / (inferences + errors)
    # model p95 of the new bundle / of the previous bundle on the same devices (also judged on each device)
    max_latency_ratio: Annotated[float, Field(gt=1)] | None = 1.5
    max_prediction_drift: Annotated[float, Field(ge=0, le=1)] | None = 0.15  # Jensen-Shannon, base 2
    # PSI against the reference profile. Off by default: on a small wave (few devices, correlated
    # frames) PSI is mostly sampling noise; turn it on for large waves (0.25 = significant).
    max_input_drift: Annotated[float, Field(ge=0)] | None = None
    min_shadow_agreement: Annotated[float, Field(ge=0, le=1)] | None = None
    min_inferences: Annotated[int, Field(ge=0)] = 20  # evidence needed on the new bundle per wave


class Timeouts(_Frozen):
    ack_s: Annotated[float, Field(gt=0)] = 10.0  # wait for devices to queue the job before chunks flow
    wave_s: Annotated[float, Field(gt=0)] = 1800.0  # a job not finished by then counts as failed ...
    # ... except a device in READY (its firmware holds activation, or it waits for its activation window):
    # it has until ready_s after the wave started (the agent's activation.max_hold_s is 24 h by default)
    ready_s: Annotated[float, Field(gt=0)] = 25 * 3600.0
    # ... and a device in PROBATION that says it waits for live evidence (an idle door-triggered device:
    # contract.jobs.PROBATION_WAIT) has until evidence_s after the wave started: READY's 24 h at most,
    # then the agent's probation.max_s (24 h by default) after activation, plus an hour
    evidence_s: Annotated[float, Field(gt=0)] = 49 * 3600.0
    observe_s: Annotated[float, Field(ge=0)] = 120.0  # telemetry gathered after a wave's jobs end
    rollback_s: Annotated[float, Field(gt=0)] = 300.0  # a device that does not confirm is reported


class RolloutPlan(_Frozen):
    selector: Selector = Selector()
    waves: Annotated[list[Wave], Field(min_length=1, max_length=32)] = [Wave(count=1), Wave(percent=10),
                                                                        Wave(percent=50), Wave(percent=100)]
    gates: Gates = Gates()
    timeouts: Timeouts = Timeouts()
    probation_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 300.0
    shadow_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None  # run beside the active model first
    chunk_size: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 128 * 1024
    bytes_per_s: Annotated[float, Field(gt=0)] | None = None

    @field_validator("waves", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        return parse_waves(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _growing(self) -> RolloutPlan:
        previous: Wave | None = None
        for wave in self.waves:
            if previous is not None and previous.size(1000) >= wave.size(1000) and not (
                    previous.count is not None and wave.percent is not None):
                raise ValueError(f"waves are cumulative and must grow: {previous.label()} then {wave.label()}")
            previous = wave
        return self

    def sizes(self, fleet: int) -> list[int]:
        """Cumulative device counts per wave for a fleet of ``fleet`` (waves that add nobody dropped)."""
        sizes: list[int] = []
        for wave in self.waves:
            size = wave.size(fleet)
            if not sizes or size > sizes[-1]:
                sizes.append(size)
        return sizes
