"""What the query layer returns: pydantic models, the same for the CLI, the HTTP API (its JSON)
and the dashboard, so a remote CLI can parse the API's answers into the very models a local one
gets from the store. Bounded lists come in a :class:`Page` (``total`` counts every match)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")
MAX_PAGE = 500  # rows one page holds at most
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # contract.topics.check_id: device and group ids
Scope = Literal["device", "group", "bundle"]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Paging(View):
    """Which slice of a list: ``offset`` rows skipped, at most ``limit`` returned."""

    offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100


class Page(View, Generic[T]):
    items: list[T]
    total: int  # every row that matches, not only this page's
    offset: int
    limit: int


class DeviceFilter(Paging):
    """Devices matching every given field; text matches a part of the id, board or agent version
    (case-insensitive, literally: ``%`` and ``_`` are plain characters)."""

    group: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None
    board: Annotated[str, StringConstraints(max_length=128)] | None = None
    bundle: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$")] | None = None  # active sha256 prefix
    online: bool | None = None
    text: Annotated[str, StringConstraints(max_length=64)] | None = None
    faulty: bool | None = None  # with (True) or without (False) a fault in its last state


class FaultView(View):
    """A fault the device reported in its last state (``contract.state.Fault``)."""

    code: str
    since: datetime  # the device's clock
    message: str


class DeviceView(View):
    id: str
    online: bool
    board: str | None
    agent_version: str | None
    protocol: int | None
    needs_new_agent: str | None  # why the cloud cannot command it, or None
    groups: list[str]
    tags: dict[str, Any]
    active: dict[str, Any] | None  # the BundleRef it reports active
    previous: dict[str, Any] | None
    job_id: str | None
    job_state: str | None
    first_seen: datetime
    last_seen: datetime  # any message from the device: state, telemetry or events
    faults: list[FaultView] = []  # what is wrong on it now, as its last state said


class EventView(View):
    ts: datetime
    type: str
    job_id: str | None
    state: str | None
    reason: str | None


class DeviceDetail(View):
    device: DeviceView
    dropped_windows: int  # telemetry windows the device dropped unsent (its spool was full)
    events: list[EventView]  # the latest, oldest first


class BundleView(View):
    sha256: str
    model: str
    version: str
    target: str
    sequence: int
    size: int
    added_at: datetime


class BundleDetail(View):
    bundle: BundleView
    manifest: dict[str, Any]


class GateView(View):
    gate: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str


class WaveView(View):
    wave: int  # 1-based
    devices: int
    states: dict[str, int]
    gates: list[GateView]  # the wave's verdicts, once judged


class RolloutDeviceView(View):
    device: str
    wave: int  # 1-based
    state: str
    reason: str | None
    rolled_back: bool


class RolloutSummary(View):
    id: str
    bundle: str
    status: str
    wave: int  # 1-based, the current one
    reason: str | None
    created_at: datetime
    updated_at: datetime


class RolloutDetail(View):
    id: str
    bundle: str
    bundle_label: str  # "fridge v1 #5" or the sha256's start
    status: str
    wave: int
    waves: int
    reason: str | None
    gates: list[dict[str, Any]]  # [{"wave": 0-based, "results": [GateResult...]}] as stored
    counts: dict[str, int]
    plan: dict[str, Any]
    failure_reasons: list[dict[str, Any]]  # [{"devices": n, "reason": why}], most frequent first
    wave_views: list[WaveView]
    devices: list[RolloutDeviceView]
    created_at: datetime
    updated_at: datetime


class RollbackStepView(View):
    device: str
    action: str  # "roll back", "cancel", "nothing", "impossible"
    current: dict[str, Any] | None
    to: dict[str, Any] | None
    why: str


class MonitorView(View):
    scope: Scope
    subject: str
    devices: int
    windows: int
    inferences: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prediction_drift_js: float | None  # vs the bundle's reference profile
    previous_drift_js: float | None  # bundle scope: vs the model's previous bundle
    input_drift_psi: float | None  # the worst input statistic
    inventory: dict[str, int]
    bundles: list[str]


class SeriesPoint(View):
    """One step of a device's or bundle's telemetry over time (``cloud.queries.series``)."""

    at: datetime  # the step's start
    minutes: int  # what it spans: the step, or whole hours over compacted rollups (cloud.compaction)
    bundle: str | None
    windows: int
    inferences: int
    error_rate: float  # errors / (inferences + errors), 0..1
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    model_p95_ms: float | None
    prediction_drift_js: float | None  # vs the bundle's reference profile


class AlertView(View):
    id: int
    kind: str
    scope: str
    subject: str
    message: str
    value: float | None
    created_at: datetime


class DeadLetterView(View):
    id: int
    topic: str
    reason: str
    bytes: int
    received_at: datetime


class AuditView(View):
    id: int
    at: datetime
    actor: str  # who: "token:<name>", "cli:<user>", "cloud" (scheduled jobs)
    action: str  # what: "rollout.pause", "bundle.add", "token.create", "retention" ...
    target: str | None
    result: str  # "ok" or "refused: <why>" / "failed: <why>"
    detail: dict[str, Any]
