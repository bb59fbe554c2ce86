"""Commands on ``devices/{id}/commands``. Each carries a ``job_id``; devices act on a job id once.

Every command the cloud sends (all but ``trust_update``, which carries its own root signatures) is
signed by an operator key with :func:`sign_command`, the one signing function of every sender: the
Ed25519 signature covers :func:`signed_bytes`, which bind the command type, the device it is for,
its job id, ``issued_at`` and ``expires_at``, and :func:`content_sha256` (the command's canonical
JSON without those times and the signature). A re-send is signed again with fresh times under the
same job id and has the same content hash, so a device tells a re-send (answered with the job's
state) from a different command reusing a job id (refused). Commands are ``schema_version`` 2
(``COMMAND_SCHEMA_VERSION``); version 1 commands were unsigned and are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AwareDatetime, Field, TypeAdapter, field_validator, model_validator

from contract import COMMAND_SCHEMA_VERSION
from contract.base import (
    MAX_INT,
    ContractModel,
    Count,
    Identifier,
    JobId,
    Message,
    Name,
    Text,
    decode_union,
    parse_object,
    utc_now,
)
from contract.common import BundleRef
from contract.errors import PayloadError, SignatureError
from contract.signing import Role, TrustStore, sign_detached, verify_signature
from contract.trust import SignedTrust

COMMAND_TTL_S: Final = 600.0
"""How long a signed command may be acted on after it was signed (the cloud re-signs each re-send)."""
MAX_COMMAND_TTL_S: Final = 24 * 3600.0
"""The longest validity a command may claim: a captured command is worthless a day later at most."""
SIGNED_DOMAIN: Final = "coldchain.command/v2"
_NOT_CONTENT = frozenset({"schema_version", "issued_at", "expires_at", "authorization"})

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
    """An operator's Ed25519 signature over :func:`signed_bytes` of the command."""

    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    signature: Annotated[str, Field(min_length=1, max_length=128)]  # base64


class _Command(Message):
    schema_version: int = COMMAND_SCHEMA_VERSION
    job_id: JobId
    device_id: Identifier | None = None  # the one device this command is for (bound by the signature)
    issued_at: AwareDatetime = Field(default_factory=utc_now)
    expires_at: AwareDatetime | None = None
    authorization: Authorization | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != COMMAND_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not supported: commands are version {COMMAND_SCHEMA_VERSION} "
                "(signed by an operator key, bound to one device); upgrade the older side")
        return value

    @model_validator(mode="after")
    def _validity(self) -> _Command:
        if self.expires_at is not None:
            span = (self.expires_at - self.issued_at).total_seconds()
            if not 0 < span <= MAX_COMMAND_TTL_S:
                raise ValueError(f"expires_at must be after issued_at by at most {MAX_COMMAND_TTL_S:g} s "
                                 f"(got {span:g} s)")
        return self


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


def declared_version(payload: bytes | str) -> int | None:
    """The ``schema_version`` a command payload declares (None: not a JSON object with an integer
    one): a command of another version is refused as such, not as malformed."""
    try:
        version = parse_object(payload, "command").get("schema_version")
    except PayloadError:
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def content_sha256(command: Command | Mapping[str, Any]) -> str:
    """The hash of what a command asks (its JSON without schema version, times and signature): the
    same for every re-send of one job, different for another command under the same job id."""
    body = command if isinstance(command, Mapping) else command.model_dump(mode="json")
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k not in _NOT_CONTENT})).hexdigest()


def signed_bytes(command: Command) -> bytes:
    """The exact bytes an operator key signs: type, device, job id, times and the content hash."""
    times = command.model_dump(mode="json", include={"issued_at", "expires_at"})
    return _canonical({"domain": SIGNED_DOMAIN, "type": command.type, "device_id": command.device_id,
                       "job_id": command.job_id, **times, "content_sha256": content_sha256(command)})


def sign_command(command: Command, key: Ed25519PrivateKey, device_id: str, now: datetime,
                 ttl_s: float = COMMAND_TTL_S) -> Command:
    """``command`` for ``device_id``, issued ``now``, valid ``ttl_s``, signed by ``key`` (an operator
    key): what every sender (rollout controller, re-sends, operator commands) publishes."""
    body = {**command.model_dump(mode="json", exclude={"authorization"}), "device_id": device_id,
            "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=ttl_s)).isoformat()}
    unsigned = COMMAND.validate_python(body)
    kid, signature = sign_detached(signed_bytes(unsigned), key)
    return unsigned.model_copy(update={"authorization": Authorization(key_id=kid, signature=signature)})


def verify_command(command: Command, trust: TrustStore) -> str:
    """Check the command's operator signature; returns the signing key id, or raises SignatureError
    (unsigned, or not by a key trusted as ``operator``, or the bytes changed after signing)."""
    if command.authorization is None:
        raise SignatureError(f"{command.type} {command.job_id} carries no authorization: every command must be "
                             "signed by an operator key this device trusts")
    verify_signature(signed_bytes(command), command.authorization.key_id, command.authorization.signature, trust,
                     Role.OPERATOR)
    return command.authorization.key_id
