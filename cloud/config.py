"""The cloud's configuration file (``coldchain cloud serve --config cloud.yaml``): alert webhooks,
server-side bundle verification for uploads, retention per data kind, inventory per group, the
key of export pseudonyms, the web dashboard, who may read ``/metrics`` and how fast tokens may be
guessed. Every field is typed, bounded and has a default, so an empty file (or none) is a working configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud.errors import CloudError
from contract.errors import ContractError
from contract.topics import check_id

Inventory = Literal["off", "counts", "labels"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Webhook(_Frozen):
    """A receiver of alerts as generic JSON (one POST per alert)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,47}$")]
    url: AnyHttpUrl
    kinds: list[str] = []  # alert kinds it wants (gate_failed, prediction_drift ...); empty: every kind
    headers: dict[str, str] = {}  # e.g. Authorization for the receiver
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class Retry(_Frozen):
    """Failed deliveries are retried after backoff_s, doubling up to backoff_max_s; after
    max_attempts the delivery is dead-lettered."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    backoff_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    backoff_max_s: Annotated[float, Field(gt=0, le=86400)] = 600.0


class Alerts(_Frozen):
    webhooks: list[Webhook] = []
    retry: Retry = Retry()
    every_s: Annotated[float, Field(gt=0, le=3600)] = 1.0  # how often due deliveries are sent


class Bundles(_Frozen):
    """Uploads (``POST /bundles``) are verified against ``trusted_keys`` as ``cloud add-bundle`` does
    and kept in ``dir``."""

    trusted_keys: list[Path] = []
    dir: Path | None = None
    max_upload_bytes: Annotated[int, Field(ge=1024, le=8 * 1024**3)] = 512 * 1024**2


class Retention(_Frozen):
    """Days each kind of row is kept (None: for ever); enforced every ``every_s`` in batches. The
    telemetry rollups are kept per minute for ``rollup_minutes_days``, then merged into hourly rows
    (None: never), which are kept ``rollup_hours_days`` (``cloud.compaction``)."""

    telemetry_days: Annotated[float, Field(gt=0)] | None = 10.0  # raw telemetry windows
    events_days: Annotated[float, Field(gt=0)] | None = 10.0
    dead_letters_days: Annotated[float, Field(gt=0)] | None = 30.0
    alerts_days: Annotated[float, Field(gt=0)] | None = 90.0
    audit_days: Annotated[float, Field(gt=0)] | None = 365.0
    rollup_minutes_days: Annotated[float, Field(gt=0)] | None = 10.0
    rollup_hours_days: Annotated[float, Field(gt=0)] | None = 400.0
    every_s: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    batch: Annotated[int, Field(ge=1, le=100_000)] = 5000

    @model_validator(mode="after")
    def _hours_outlive_minutes(self) -> Retention:
        minutes, hours = self.rollup_minutes_days, self.rollup_hours_days
        if hours is not None and minutes is not None and hours < minutes:
            raise ValueError(f"rollup_hours_days ({hours:g}) deletes rollups before they are merged into hours "
                             f"(rollup_minutes_days: {minutes}); make it at least as long, or null")
        return self


class Telemetry(_Frozen):
    """What the cloud keeps of the devices' inventories, per group (households' contents are
    personal data): ``labels`` (the default), ``counts`` (only how many items), ``off``."""

    inventory: Inventory = "labels"
    groups: dict[str, Inventory] = {}  # group -> its own setting; a device in several takes the strictest

    def inventory_for(self, groups: list[str]) -> Inventory:
        order: list[Inventory] = ["off", "counts", "labels"]
        chosen = [self.groups[g] for g in groups if g in self.groups] or [self.inventory]
        return min(chosen, key=order.index)


class Exports(_Frozen):
    """Exports replace device ids with keyed pseudonyms (HMAC-SHA256 under this key) unless an
    admin asks for raw ids; without a file the key is made and kept in the store's folder."""

    pseudonym_key_file: Path | None = None


class Dashboard(_Frozen):
    """The web dashboard (``/ui``): how long a sign-in lasts at most (``session_hours``) and without
    a page (``session_idle_minutes``), and the MLflow tracking server whose compile runs the bundle
    pages link to (``mlflow_ui_url``: its UI, when the tracking URI is not an http(s) server that is
    its own UI)."""

    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    session_idle_minutes: Annotated[float, Field(ge=1, le=24 * 60)] = 30.0
    mlflow_tracking_uri: Annotated[str, Field(max_length=2000)] | None = None
    mlflow_ui_url: AnyHttpUrl | None = None


class Metrics(_Frozen):
    """``/metrics`` needs a token (any scope) unless ``public``: it names groups, which devices report."""

    public: bool = False


class AuthLimit(_Frozen):
    """Token guessing (``cloud.auth_limit``): after ``failures`` refused tokens (API bearer or
    dashboard sign-in) within ``window_s`` from one client address, that address is answered 429
    for ``backoff_s``, doubling at each further lock-out up to ``backoff_max_s``; at most
    ``max_clients`` addresses are tracked (the oldest is forgotten). To relax it (many users behind
    one NAT or proxy), raise ``failures`` or shorten ``backoff_s``."""

    failures: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    window_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    backoff_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    backoff_max_s: Annotated[float, Field(ge=1, le=7 * 86400)] = 3600.0
    max_clients: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000

    @model_validator(mode="after")
    def _cap_above_backoff(self) -> AuthLimit:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s:g}) is below backoff_s ({self.backoff_s:g})")
        return self


class CloudConfig(_Frozen):
    alerts: Alerts = Alerts()
    bundles: Bundles = Bundles()
    retention: Retention = Retention()
    telemetry: Telemetry = Telemetry()
    exports: Exports = Exports()
    dashboard: Dashboard = Dashboard()
    metrics: Metrics = Metrics()
    auth_limit: AuthLimit = AuthLimit()


def load_config(path: Path | None) -> CloudConfig:
    """The file at ``path`` (YAML), or the defaults; relative paths in it are taken from its folder."""
    if path is None:
        return CloudConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        config = CloudConfig.model_validate(raw)
    except OSError as exc:
        raise CloudError(f"cannot read the cloud configuration {path}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise CloudError(f"the cloud configuration {path} is not valid: {exc}") from exc
    try:
        for group in config.telemetry.groups:
            check_id(group, "group")
    except ContractError as exc:
        raise CloudError(f"the cloud configuration {path}: telemetry.groups: {exc}") from exc
    base = path.resolve().parent
    bundles = config.bundles.model_copy(update={
        "trusted_keys": [k if k.is_absolute() else base / k for k in config.bundles.trusted_keys],
        "dir": None if config.bundles.dir is None else (config.bundles.dir if config.bundles.dir.is_absolute()
                                                        else base / config.bundles.dir)})
    key = config.exports.pseudonym_key_file
    exports = config.exports if key is None or key.is_absolute() else Exports(pseudonym_key_file=base / key)
    return config.model_copy(update={"bundles": bundles, "exports": exports})
