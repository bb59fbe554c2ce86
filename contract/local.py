"""The agent's local API for the appliance firmware: newline-delimited JSON on a Unix-domain socket.

Every line the firmware sends is a :data:`Request` (``type`` names it) carrying an ``id`` of the
firmware's choosing; every answer carries that ``id`` back. Events the firmware subscribed to
(``results``, ``inventory``, ``model``, ``jobs``) carry the id of the request that caused them, or
none (an inference on the agent's own schedule, a rollout). A line that does not validate is
answered with an :class:`ErrorAnswer` naming the field (``docs/firmware.md``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from contract.base import (
    ContractModel,
    Count,
    Identifier,
    JobId,
    Label,
    LabelCounts,
    Message,
    Name,
    Text,
    parse_object,
    utc_now,
)
from contract.common import BundleRef
from contract.errors import PayloadError
from contract.jobs import JobState
from contract.state import JobSummary, Slot

MAX_IMAGE_BYTES = 4 * 1024 * 1024
"""Largest image a firmware may send inline (``image_b64`` decodes to at most this many bytes)."""
MAX_LINE_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024
"""Longest request line accepted: an inline image in base64 plus room for the rest of the request."""
MAX_ITEMS = 1000
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Topic = Literal["results", "inventory", "model", "jobs"]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Millis = Annotated[float, Field(ge=0.0, le=3_600_000.0)]
Pixel = Annotated[float, Field(ge=-1e6, le=1e6)]


class _Request(Message):
    id: RequestId


class InferRequest(_Request):
    """Infer ``now`` (a frame read from the agent's source at once), on the ``next_frame`` the
    schedule reads, or on an ``image`` the firmware gives: a file path (``image_path``) or the
    file's bytes in base64 (``image_b64``). ``source`` names the capture whose last result the
    inventory is compared with (default: ``main`` for the agent's source, ``image`` for images)."""

    type: Literal["infer"] = "infer"
    mode: Literal["now", "next_frame", "image"]
    image_path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    image_b64: Annotated[str, StringConstraints(min_length=4, max_length=MAX_IMAGE_BYTES * 4 // 3 + 4)] | None = None
    source: Identifier | None = None

    @model_validator(mode="after")
    def _one_image(self) -> InferRequest:
        given = [name for name in ("image_path", "image_b64") if getattr(self, name) is not None]
        if self.mode == "image" and len(given) != 1:
            raise ValueError("image_path: mode 'image' needs exactly one of image_path or image_b64")
        if self.mode != "image" and given:
            raise ValueError(f"{given[0]}: only for mode 'image' (mode is {self.mode!r})")
        return self


class StatusRequest(_Request):
    type: Literal["status"] = "status"


class SubscribeRequest(_Request):
    """Receive every later event of these topics (a later subscribe replaces the set)."""

    type: Literal["subscribe"] = "subscribe"
    topics: Annotated[list[Topic], Field(min_length=1, max_length=4)]


class HoldActivationRequest(_Request):
    """Keep a verified candidate in READY (the appliance is busy) for at most ``max_s`` seconds."""

    type: Literal["hold_activation"] = "hold_activation"
    reason: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    max_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 86_400.0


class ReleaseActivationRequest(_Request):
    type: Literal["release_activation"] = "release_activation"


Request = Annotated[InferRequest | StatusRequest | SubscribeRequest | HoldActivationRequest |
                    ReleaseActivationRequest, Field(discriminator="type")]
REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


# ---- answers and events -------------------------------------------------------------------------
class _Answer(Message):
    id: RequestId | None = None  # the request answered, or that caused this event
    ts: datetime = Field(default_factory=utc_now)


class Item(ContractModel):
    label: Label
    score: Score
    box: Annotated[list[Pixel], Field(min_length=4, max_length=4)] | None = None  # x0, y0, x1, y1 in frame pixels


class InferResult(_Answer):
    """One inference: every item found (boxes for detectors), the count per label, timings."""

    type: Literal["result"] = "result"
    source: Identifier
    bundle: BundleRef | None
    items: Annotated[list[Item], Field(max_length=MAX_ITEMS)]
    inventory: LabelCounts
    model_ms: Millis
    total_ms: Millis


class Change(ContractModel):
    """``count`` items of ``label`` came or went; ``score`` is the label's best score now (0 if none
    was seen), ``total`` how many of it the source holds now."""

    label: Label
    count: Annotated[int, Field(ge=1, le=MAX_ITEMS)]
    score: Score
    total: Annotated[int, Field(ge=0, le=MAX_ITEMS)]


class InventoryEvent(_Answer):
    type: Literal["inventory"] = "inventory"
    source: Identifier
    added: Annotated[list[Change], Field(max_length=MAX_ITEMS)]
    removed: Annotated[list[Change], Field(max_length=MAX_ITEMS)]


class ModelEvent(_Answer):
    """The active bundle changed (an activation, a rollback, an install)."""

    type: Literal["model"] = "model"
    active: BundleRef | None
    previous_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


class JobStateEvent(_Answer):
    type: Literal["job"] = "job"
    job_id: JobId
    state: JobState
    reason: Text | None = None


class StatusAnswer(_Answer):
    type: Literal["status"] = "status"
    device_id: Identifier
    connected: bool
    active: BundleRef | None
    slots: dict[Literal["a", "b"], Slot] = {}
    job: JobSummary | None = None
    trigger: Literal["interval", "on_request"]
    last_error: Text | None = None
    dropped: Count = 0  # messages this client's queue had to drop (it read too slowly)
    refused: LabelCounts = {}  # errors the local API answered since the agent started, by code (every client)


class OkAnswer(_Answer):
    type: Literal["ok"] = "ok"
    detail: Text | None = None


class ErrorAnswer(_Answer):
    """A request refused: ``field`` names what is wrong (``null`` when the whole line is)."""

    type: Literal["error"] = "error"
    code: Name
    field: Annotated[str, StringConstraints(max_length=256)] | None = None
    message: Text


Answer = Annotated[InferResult | InventoryEvent | ModelEvent | JobStateEvent | StatusAnswer | OkAnswer | ErrorAnswer,
                   Field(discriminator="type")]
ANSWER: TypeAdapter[Answer] = TypeAdapter(Answer)


class RequestError(PayloadError):
    """A request line that is refused; ``field`` names the first field at fault, ``request_id`` is
    the line's id when one could be read."""

    def __init__(self, message: str, field: str | None, request_id: str | None) -> None:
        super().__init__(message)
        self.field, self.request_id = field, request_id

    def answer(self) -> ErrorAnswer:
        return ErrorAnswer(id=self.request_id, code="bad_request", field=self.field, message=str(self)[:2048])


def _id_of(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    try:
        return TypeAdapter(RequestId).validate_python(value) if isinstance(value, str) else None
    except ValidationError:
        return None


def decode_request(line: bytes | str) -> Request:
    """One request line, or :class:`RequestError` naming the field."""
    try:
        data = parse_object(line, "request", MAX_LINE_BYTES)
    except PayloadError as exc:
        field = "schema_version" if "schema_version" in str(exc) else None
        raise RequestError(str(exc), field, None) from exc
    request_id = _id_of(data)
    try:
        return REQUEST.validate_python(data)
    except ValidationError as exc:
        problems = []
        first: str | None = None
        for err in exc.errors(include_url=False):
            loc = [str(p) for p in err["loc"]]
            if loc and loc[0] == data.get("type"):
                loc = loc[1:]  # the union's tag is not a field
            msg = err["msg"].removeprefix("Value error, ")
            where = ".".join(loc)
            if not where and err["type"] == "value_error":  # a check across fields names its field first
                where, _, msg = msg.partition(": ")
            where = where or ("type" if err["type"].startswith("union_tag") else "(request)")
            first = first or where
            problems.append(f"{where}: {msg}")
        raise RequestError(f"request is invalid: {'; '.join(problems)}", first, request_id) from exc


def decode_answer(line: bytes | str) -> Answer:
    """An answer or event line (what a client reads)."""
    data = parse_object(line, "answer", MAX_LINE_BYTES)
    try:
        return ANSWER.validate_python(data)
    except ValidationError as exc:
        raise PayloadError(f"answer is invalid: {exc}") from exc
