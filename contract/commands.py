"""Commands on ``devices/{id}/commands``. Each carries a ``job_id``; devices act on a job id once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, model_validator

from contract.base import MAX_INT, ContractModel, Count, Identifier, JobId, Message, Name, Text, decode_union, utc_now
from contract.common import BundleRef
from contract.trust import SignedTrust

Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class ArtifactRef(ContractModel):
    """Where and how the bundle tarball travels: chunks on the group topic, repairs per device."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(gt=0, le=4 * 1024**3)]
    chunk_size: Annotated[int, Field(ge=1024, le=1024 * 1024)]
    chunk_count: Annotated[int, Field(gt=0, le=MAX_INT)]
    group: Identifier | None = None  # group topic the chunks are published on; None = device topic only

    @model_validator(mode="after")
    def _count(self) -> ArtifactRef:
        expected = -(-self.size // self.chunk_size)
        if self.chunk_count != expected:
            raise ValueError(f"{self.size} bytes in chunks of {self.chunk_size} make {expected} chunks, "
                             f"not {self.chunk_count}")
        return self


class Authorization(ContractModel):
    """An operator's Ed25519 signature over the command without this field (see contract.signing)."""

    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    signature: Annotated[str, Field(min_length=1, max_length=128)]  # base64


class _Command(Message):
    job_id: JobId
    issued_at: datetime = Field(default_factory=utc_now)
    expires_at: datetime | None = None


class DeployCommand(_Command):
    type: Literal["deploy"] = "deploy"
    bundle: BundleRef
    artifact: ArtifactRef
    shadow_s: Seconds | None = None  # run beside the active model this long before activating
    probation_s: Seconds = 300.0
    # the candidate's model latency on the device may be at most this multiple of the bundle it
    # replaces, timed on the same device (at install, and live in probation); None: the device's default
    max_latency_ratio: Annotated[float, Field(gt=1, le=1000)] | None = None


class RollbackCommand(_Command):
    """Go back to ``to`` (default: the previous slot). Installing an older ``sequence`` than the
    active one needs ``authorization`` by an operator key the device trusts."""

    type: Literal["rollback"] = "rollback"
    to: BundleRef | None = None
    reason: Text
    authorization: Authorization | None = None


class CancelCommand(_Command):
    type: Literal["cancel"] = "cancel"
    target_job_id: JobId


class ProfileCommand(_Command):
    """Measure the active model's latency on the device and report it as an event."""

    type: Literal["profile"] = "profile"
    iterations: Annotated[int, Field(ge=1, le=10_000)] = 50
    warmup: Annotated[int, Field(ge=0, le=1_000)] = 5


class SetConfigCommand(_Command):
    type: Literal["set_config"] = "set_config"
    inference_interval_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    telemetry_window_s: Annotated[float, Field(ge=1, le=24 * 3600)] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None

    @model_validator(mode="after")
    def _something(self) -> SetConfigCommand:
        if self.inference_interval_s is None and self.telemetry_window_s is None and self.log_level is None:
            raise ValueError("set_config must set at least one of inference_interval_s, telemetry_window_s, log_level")
        return self


class ShadowStartCommand(_Command):
    type: Literal["shadow_start"] = "shadow_start"
    bundle: BundleRef
    artifact: ArtifactRef
    duration_s: Seconds = 600.0
    min_frames: Count = 50


class ShadowStopCommand(_Command):
    type: Literal["shadow_stop"] = "shadow_stop"
    target_job_id: JobId | None = None
    note: Name | None = None


class TrustUpdateCommand(_Command):
    """A new trust document for the device (``contract.trust``): it verifies the root signature
    itself, so this command needs no operator key (a compromised one is what it replaces)."""

    type: Literal["trust_update"] = "trust_update"
    trust: SignedTrust


Command = Annotated[
    DeployCommand | RollbackCommand | CancelCommand | ProfileCommand | SetConfigCommand | ShadowStartCommand
    | ShadowStopCommand | TrustUpdateCommand,
    Field(discriminator="type"),
]
COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


def decode_command(payload: bytes | str) -> Command:
    return decode_union(COMMAND, payload, "command")


def authorization_bytes(command: RollbackCommand) -> bytes:
    """The exact bytes an operator signs for a rollback: the command without its authorization."""
    body = command.model_dump(mode="json", exclude={"authorization"})
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
