"""Agent configuration: one TOML or YAML file plus ``COLDCHAIN_*`` environment overrides.

Environment variables override file values; nested fields use a double underscore, e.g.
``COLDCHAIN_BROKER__URL=mqtts://broker:8883`` or ``COLDCHAIN_DEVICE_ID=fridge-0042``.
Anything invalid fails at start with the field and the reason (:class:`ConfigError`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from contract.base import Identifier, problems_of
from transport.config import BrokerConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "COLDCHAIN_"
NOT_SETTINGS = frozenset({"COLDCHAIN_FAULT", "COLDCHAIN_FAULT_AFTER", "COLDCHAIN_ONNX2TF_VENV", "COLDCHAIN_DB",
                          "COLDCHAIN_BROKER", "COLDCHAIN_API_TOKEN"})
"""COLDCHAIN_* variables that belong to other parts (fault injection, the compiler, the cloud's
commands), not to the agent; the agent's broker URL is ``COLDCHAIN_BROKER__URL``."""


LIST_SETTINGS = frozenset({"groups", "trusted_keys", "bundle_keys", "operator_keys"})  # comma-separated in env


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceConfig(_Section):
    """Where frames come from: a camera (``/dev/video0`` or an index), a folder, a file, or a URL."""

    kind: Literal["camera", "folder", "file", "url"] = "folder"
    location: str = "frames"
    loop: bool = True
    trigger: Literal["interval", "on_request"] = "interval"  # on_request: only when the firmware asks


class LimitsConfig(_Section):
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    spool_max_windows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # unsent windows older than this are dropped (counted, reported): 10 days, like the cloud's raw windows
    spool_max_age_s: Annotated[float, Field(ge=60, le=365 * 86_400)] = 10 * 86_400
    telemetry_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 50  # windows sent and not yet acked by the cloud
    telemetry_resend_s: Annotated[float, Field(ge=1, le=86_400)] = 30.0  # unacked this long: sent again
    max_frame_pixels: Annotated[int, Field(ge=64 * 64, le=8192 * 8192)] = 4096 * 4096


class LocalApiConfig(_Section):
    """The firmware's local API (docs/firmware.md): a Unix-domain socket, ``data_dir/agent.sock`` by default."""

    enabled: bool = True
    socket: Path | None = None
    mode: Annotated[int, Field(ge=0, le=0o777)] = 0o660
    client_queue: Annotated[int, Field(ge=1, le=100_000)] = 256  # lines queued per client before drops
    max_clients: Annotated[int, Field(ge=1, le=256)] = 16
    # folders whose images infer's image_path may name (symlinks resolved); none: image_path is refused
    image_dirs: Annotated[list[Path], Field(max_length=64)] = []

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        """``0o660`` or ``660`` from YAML or the environment, where it arrives as text."""
        if isinstance(value, str):
            try:
                return int(value.removeprefix("0o"), 8)
            except ValueError:
                raise ValueError(f"mode must be octal permissions like 0o660, got {value!r}") from None
        return value


class InventoryConfig(_Section):
    """Hysteresis of inventory changes: an item is added at ``enter`` or above, removed below ``exit``."""

    enter: Annotated[float, Field(ge=0, le=1)] = 0.5
    exit: Annotated[float, Field(ge=0, le=1)] = 0.35

    @model_validator(mode="after")
    def _band(self) -> InventoryConfig:
        if self.exit > self.enter:
            raise ValueError(f"inventory.exit ({self.exit}) must not be above inventory.enter ({self.enter})")
        return self


class ActivationConfig(_Section):
    """When a verified candidate may become active (docs/firmware.md "Activation windows and holds").

    ``window`` ("02:00-05:00", local time; it may wrap past midnight) and ``when_idle_s`` (no firmware
    request for that long) each let a waiting candidate activate; with neither, it activates at once
    unless the firmware holds it. A hold, and any wait in READY, lasts at most ``max_hold_s``."""

    window: str | None = None
    when_idle_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    max_hold_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 86_400.0

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        form = 'HH:MM-HH:MM, local time, 24 h (e.g. "02:00-05:00", or "23:00-01:00" across midnight)'
        if value is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"must be {form}")
        if value is not None and value[:5] == value[6:]:
            raise ValueError(f"starts where it ends, so it would never open: give {form}")
        return value


class ProbationConfig(_Section):
    """How long a new bundle's probation may wait for live evidence (docs/agent.md "Probation"): past the
    deploy command's ``probation_s`` with fewer than ``min_inferences`` live inferences (an idle
    ``on_request`` device), probation goes on until there are, or until ``max_s`` after it began."""

    min_inferences: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    min_latency_samples: Annotated[int, Field(ge=1, le=1_000_000)] = 100  # live latencies to judge a p95 on
    max_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 86_400.0


class AgentConfig(_Section):
    device_id: Identifier
    board: str = "unknown"
    groups: Annotated[list[Identifier], Field(max_length=32)] = []
    data_dir: Path = Path("/var/lib/coldchain")
    # Who is trusted for what (docs/security.md "Keys and roles"): a root-signed trust document
    # (``trust_file``, copied into data_dir/trust/ and updated from there by root-signed commands), or,
    # on a device without a root key, public key files: ``bundle_keys`` sign bundles, ``operator_keys``
    # sign commands, ``trusted_keys`` (the flat list from before roles) do both.
    trust_file: Path | None = None
    trusted_keys: Annotated[list[Path], Field(max_length=16)] = []
    bundle_keys: Annotated[list[Path], Field(max_length=16)] = []
    operator_keys: Annotated[list[Path], Field(max_length=16)] = []
    broker: BrokerConfig = BrokerConfig()
    source: SourceConfig = SourceConfig()
    inference_interval_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    telemetry_window_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    limits: LimitsConfig = LimitsConfig()
    local_api: LocalApiConfig = LocalApiConfig()
    activation: ActivationConfig = ActivationConfig()
    probation: ProbationConfig = ProbationConfig()
    inventory: InventoryConfig = InventoryConfig()

    @property
    def socket_path(self) -> Path:
        return self.local_api.socket or self.data_dir / "agent.sock"

    @field_validator("trusted_keys", "bundle_keys", "operator_keys")
    @classmethod
    def _keys_exist(cls, paths: list[Path]) -> list[Path]:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ValueError(f"trusted key file(s) not found: {', '.join(missing)}")
        return paths

    @model_validator(mode="after")
    def _some_trust(self) -> AgentConfig:
        if self.trust_file is None and not (self.trusted_keys or self.bundle_keys):
            raise ValueError("no bundle-signing key is trusted: set trust_file (a root-signed trust document), "
                             "or bundle_keys / trusted_keys (public key files)")
        return self


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read agent configuration {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"agent configuration {path} is not UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"agent configuration {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") \
            from exc
    if not isinstance(data, dict):
        raise ConfigError(f"agent configuration {path} must be a mapping of settings")
    return data


def _overlay(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        target = merged
        for part in path[:-1]:
            target = target.setdefault(part, {})
        leaf = path[-1]
        target[leaf] = [v for v in value.split(",") if v] if leaf in LIST_SETTINGS else value
    return merged


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """File (TOML if ``.toml``, else YAML) overlaid with ``COLDCHAIN_*`` variables."""
    data = _read(path) if path is not None else {}
    merged = _overlay(data, os.environ if environ is None else environ)
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "".join(f"\n  - {p}" for p in problems_of(exc))
        raise ConfigError(f"invalid agent configuration{where}:{problems}") from exc


class _ApiWhere(BaseModel):
    socket: Path | None = None


class _Where(BaseModel):  # the few settings `agent status` needs; everything else is ignored
    device_id: Identifier | None = None
    data_dir: Path = Path("/var/lib/coldchain")
    local_api: _ApiWhere = _ApiWhere()


@dataclass(frozen=True)
class Whereabouts:
    """Where an agent keeps its state: what ``coldchain agent status`` reads."""

    device_id: str | None
    data_dir: Path
    socket_path: Path


def whereabouts(path: Path, environ: Mapping[str, str] | None = None) -> tuple[Whereabouts, str | None]:
    """The device id, data directory and socket a configuration names, and why ``agent run`` would refuse
    the configuration (``None``: it is valid). A configuration ``run`` refuses (a key file gone, a CA file
    missing) still names them: status is what one runs to see what went wrong."""
    try:
        config = load_config(path, environ)
        return Whereabouts(config.device_id, config.data_dir, config.socket_path), None
    except ConfigError as refused:
        data = _overlay(_read(path), os.environ if environ is None else environ)
        try:
            where = _Where.model_validate(data)
        except ValidationError:
            raise refused from None
        socket = where.local_api.socket or where.data_dir / "agent.sock"
        return Whereabouts(where.device_id, where.data_dir, socket), str(refused)
