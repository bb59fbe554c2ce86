"""The base of every message model, bounded field types, and JSON decoding with readable errors."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from contract import SCHEMA_VERSION
from contract.compat import Self
from contract.errors import PayloadError

MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest JSON message accepted (chunks travel in their own binary frame)."""
MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted: no contract message needs more than a few."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MAX_TEXT = 2048
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Epoch = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
"""A device's telemetry spool epoch: made when the spool is created, new whenever it is rebuilt."""
MAX_INT = 2**63 - 1
"""The largest integer any payload may carry: what a BIGINT column (and a C int64 on a device) holds."""
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
LabelCounts = Annotated[dict[Label, Count], Field(max_length=4096)]
Scalar = str | int | float | bool | None


def text(value: str, limit: int = MAX_TEXT) -> str:
    """Any string as a ``Text`` field, or a database's text column, takes it: what cannot be encoded
    as UTF-8 (a lone surrogate from a hostile topic) escaped as ``\\udXXX``, NUL (which PostgreSQL text
    refuses) as ``\\x00``, cut to ``limit`` characters with a mark. For reporting and recording outside
    input (a topic, an error message) without the report itself being refused."""
    shown = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return shown if len(shown) <= limit else shown[: limit - 32] + f"... ({len(shown)} chars)"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    try:  # year 1 at +14:00 is before year 1 in UTC: no store and no comparison can take it
        aware.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError(f"{value.isoformat()} has no UTC equivalent within years 1-9999") from exc
    return aware


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time without a zone read as UTC (a naive time against an aware one raises TypeError, and the
store refuses it), and one whose UTC equivalent is outside the calendar refused; an offset is kept as
sent, so what was signed or stored before dumps the same."""


class ContractModel(BaseModel):
    """Frozen, strict about unknown fields: a typo in a payload is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class Message(ContractModel):
    """A payload that travels on its own: it carries ``schema_version``."""

    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not supported: this coldchain reads version {SCHEMA_VERSION}; "
                "upgrade the older side"
            )
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        return decode(cls, payload)


M = TypeVar("M")


def problems_of(exc: ValidationError) -> tuple[str, ...]:
    out = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(payload)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict | list) else f" (got {str(got)[:60]!r})"
        out.append(f"{where}: {msg}{shown}")
    return tuple(out)


def parse_object(payload: bytes | str, what: str, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Size-check and JSON-decode a payload that must be an object."""
    size = len(payload)
    if size > limit:
        raise PayloadError(f"{what} payload is {size} bytes, more than the {limit} allowed")
    raw = payload.encode() if isinstance(payload, str) else payload
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting(raw) > MAX_DEPTH:  # counting is cheap
        raise PayloadError(f"{what} payload nests objects or arrays more than {MAX_DEPTH} deep")
    try:  # bytes are UTF-8: json.loads would guess UTF-16 or UTF-32 from them
        text = payload if isinstance(payload, str) else payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{what} payload is not valid UTF-8: {exc}") from exc
    try:
        data = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{what} payload is not valid JSON: {exc}") from exc
    except _NotFinite as exc:
        raise PayloadError(f"{what} payload is not valid JSON: it holds {exc}, and JSON numbers are finite") from exc
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits (4300)
        raise PayloadError(f"{what} payload holds a number too long to read: {exc}") from exc
    except RecursionError as exc:  # the depth check above should have caught it; never let it through
        raise PayloadError(f"{what} payload nests too deeply") from exc
    if not isinstance(data, dict):
        raise PayloadError(f"{what} payload must be a JSON object, got {type(data).__name__}")
    if "schema_version" not in data:
        raise PayloadError(f"{what} payload has no schema_version: every coldchain payload must carry one")
    if b"\\u0000" in raw and _holds_nul(data):  # PostgreSQL's text and JSONB cannot hold it; no message needs it
        raise PayloadError(f"{what} payload holds a NUL character (\\u0000) in a string: refused")
    return data


class _NotFinite(ValueError):
    """``NaN``, ``Infinity`` or a number too large for a float (``1e309``): not JSON, and no store keeps it."""


def _not_a_number(name: str) -> float:
    raise _NotFinite(name)


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NotFinite(f"{literal[:40]} (too large for a number)")
    return value


def _holds_nul(data: Any) -> bool:
    """Whether a NUL is in any key or string of decoded JSON (walked without recursion)."""
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def nesting(payload: bytes | str) -> int:
    """How deep objects and arrays nest in a JSON text, without parsing it (strings are skipped,
    so brackets inside them do not count); a deep payload is refused before ``json.loads`` recurses."""
    data = payload.encode() if isinstance(payload, str) else payload
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def validate(adapter: TypeAdapter[M], data: Any, what: str) -> M:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise PayloadError(f"{what} payload is invalid:", problems_of(exc)) from exc


def decode(model: type[M], payload: bytes | str, limit: int = MAX_PAYLOAD_BYTES) -> M:
    """Decode a JSON payload into ``model``, raising PayloadError that names every bad field."""
    what = getattr(model, "__name__", str(model))
    return validate(_adapter(model), parse_object(payload, what, limit), what)


def decode_union(adapter: TypeAdapter[M], payload: bytes | str, what: str) -> M:
    """Decode a payload into one of a discriminated union (events, commands)."""
    return validate(adapter, parse_object(payload, what), what)


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(model: type[M]) -> TypeAdapter[M]:
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter
