"""What the fuzz row sends (hypothesis strategies), and the oracle that says which of it the agent
must refuse (count as malformed): ``decode_command`` / ``decode_chunk``, the very decoders the
agent runs, so a payload is invalid exactly when the contract refuses it.

Valid payloads push every field to its limits: the largest and smallest allowed numbers, strings
of the maximum length, unicode, unknown job ids, deploys of artifacts that do not exist (small) or
are enormous (4 GiB in 1 KiB chunks). Most valid commands are signed as the cloud signs them; the
rest the device must refuse without counting them as malformed: unsigned or signed with garbage by
the device's own key id, for another device, long expired, or version 1. Invalid ones: random
bytes, random JSON, valid commands with one field pushed past its limit or of the wrong type,
unknown or missing fields, nesting within and beyond the allowed 32 levels, a payload beyond
256 KiB, broken chunk frames. Artifact shas of deploys start with 0-7, those of chunk frames with
8-f, so a valid chunk never belongs to a fuzzed download."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st
from pydantic import ValidationError

from contract import COMMAND_SCHEMA_VERSION, topics
from contract.commands import COMMAND, MAX_COMMAND_TTL_S, declared_version, decode_command, sign_command
from contract.errors import ContractError
from contract.signing import key_id
from contract.transfer import MAGIC, decode_chunk, encode_chunk

DEVICE = "fuzz-1"
GROUP = "eu"
EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**40]
EXTREME_FLOATS = [0.0, 5e-324, 1e-300, 1.0, 1.0000000000000002, 1e308, -1e308, 1.7976931348623157e308]
WEEK = 7 * 24 * 3600.0


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(st.text(min_size=min_size, max_size=max_size), st.just("x" * max_size),
                     st.just("\u00e9" * max_size), st.just("\U0001f9ca" * max_size))


def regex(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


JOB_IDS = st.one_of(regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"), st.just("j" * 128), st.just("0"),
                    st.just("unknown-job"), st.just("a.b:c-d_e"))
IDENTIFIERS = st.one_of(regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"), st.just("g" * 64))
NAMES = text(128, 1)
COUNTS = st.one_of(st.sampled_from([i for i in EXTREME_INTS if i >= 0]), st.integers(min_value=0))
DEPLOY_SHAS = regex(r"[0-7][0-9a-f]{63}")
CHUNK_SHAS = regex(r"[89a-f][0-9a-f]{63}")
MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 1), timezones=st.just(UTC))
EXPIRED = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2001, 1, 1), timezones=st.just(UTC))
SECONDS = st.one_of(st.sampled_from([5e-324, 1e-9, 1.0, WEEK]), st.floats(min_value=0, max_value=WEEK,
                                                                            exclude_min=True, allow_nan=False))


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def bundle_ref(draw: st.DrawFn) -> dict[str, Any]:
    return {"model_name": draw(NAMES), "model_version": draw(NAMES), "target": draw(NAMES),
            "sequence": draw(COUNTS), "sha256": draw(DEPLOY_SHAS)}


@st.composite
def artifact(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.one_of(st.sampled_from([1, 1023, 1024, 1025, 4 * 1024**3]), st.integers(1, 4 * 1024**3)))
    chunk = draw(st.one_of(st.sampled_from([1024, 1024**2]), st.integers(1024, 1024**2)))
    return {"sha256": draw(DEPLOY_SHAS), "size": size, "chunk_size": chunk, "chunk_count": -(-size // chunk),
            "group": draw(_optional(IDENTIFIERS))}


@st.composite
def envelope(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {"schema_version": COMMAND_SCHEMA_VERSION, "type": kind, "job_id": draw(JOB_IDS),
                            "device_id": draw(st.sampled_from([DEVICE, DEVICE, "fuzz-2"]))}
    if draw(st.booleans()):
        issued = draw(MOMENTS)
        body["issued_at"] = _iso(issued)
        if draw(st.booleans()):  # often long expired
            body["expires_at"] = _iso(issued + timedelta(seconds=draw(st.floats(1e-3, MAX_COMMAND_TTL_S))))
    return body


@st.composite
def valid_command(draw: st.DrawFn, trusted_key_id: str) -> dict[str, Any]:
    """A schema-valid command body, unsigned (or with a garbage signature by the trusted key id)."""
    kind = draw(st.sampled_from(["deploy", "cancel", "rollback", "profile", "set_config", "shadow_start",
                                 "shadow_stop"]))
    body = draw(envelope(kind))
    if kind == "deploy":
        body |= {"bundle": draw(bundle_ref()), "artifact": draw(artifact()), "shadow_s": draw(_optional(SECONDS)),
                 "probation_s": draw(SECONDS),
                 "max_latency_ratio": draw(_optional(st.floats(1, 1000, exclude_min=True, allow_nan=False)))}
    elif kind == "cancel":
        body["target_job_id"] = draw(JOB_IDS)
    elif kind == "rollback":
        body |= {"reason": draw(text(2048)), "to": draw(_optional(bundle_ref()))}
    elif kind == "profile":  # valid but cheap: each is timed on the device's model
        body |= {"iterations": draw(st.sampled_from([1, 2, 3])), "warmup": draw(st.sampled_from([0, 1]))}
    elif kind == "set_config":
        settings = {"inference_interval_s": draw(st.sampled_from([0.0, 1e-9, 3600.0])),
                    "telemetry_window_s": draw(st.sampled_from([1.0, 86400.0, 60.0])),
                    "log_level": draw(st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]))}
        keep = draw(st.sets(st.sampled_from(sorted(settings)), min_size=1))
        body |= {k: settings[k] for k in keep}
    elif kind == "shadow_start":
        body |= {"bundle": draw(bundle_ref()), "artifact": draw(artifact()), "duration_s": draw(SECONDS),
                 "min_frames": draw(COUNTS)}
    else:
        body |= {"target_job_id": draw(_optional(JOB_IDS)), "note": draw(_optional(NAMES))}
    if draw(st.integers(0, 3)) == 0:  # garbage, often by the device's own operator key id
        body["authorization"] = {"key_id": draw(st.one_of(st.just(trusted_key_id), regex(r"[0-9a-f]{16}"))),
                                 "signature": draw(regex(r"[A-Za-z0-9+/]{1,126}={0,2}"))}
    return body


@st.composite
def signed_command(draw: st.DrawFn, key: Ed25519PrivateKey) -> bytes:
    """A valid command as the cloud sends it (signed by the trusted operator key, for this device,
    fresh) most of the time; else one the device must refuse without counting it as malformed:
    unsigned or badly signed, for another device, long expired, or an older schema version."""
    body = draw(valid_command(key_id(key.public_key())))
    how = draw(st.sampled_from(["signed"] * 6 + ["as drawn", "other device", "expired", "old version"]))
    if how == "as drawn":
        return json.dumps(body).encode()
    if how == "old version":
        return json.dumps({**body, "schema_version": 1}).encode()
    now = draw(EXPIRED) if how == "expired" else datetime.now(UTC)
    try:
        command = COMMAND.validate_python(body)
    except ValidationError:  # a value past its limit (the strategies reach beyond them): sent as drawn
        return json.dumps(body).encode()
    return sign_command(command, key, "fuzz-2" if how == "other device" else DEVICE, now).to_json()


@st.composite
def broken_command(draw: st.DrawFn, trusted_key_id: str) -> bytes:
    """A valid command with one thing wrong (or nothing like a command at all)."""
    how = draw(st.sampled_from(["field", "unknown field", "missing field", "schema", "type", "long string",
                                "nested", "too deep", "bytes", "json", "literal", "huge"]))
    body = draw(valid_command(trusted_key_id))
    if how == "field":
        key = draw(st.sampled_from(sorted(body)))
        body[key] = draw(st.one_of(st.sampled_from(EXTREME_INTS), st.sampled_from(EXTREME_FLOATS), st.text(max_size=8),
                                   st.none(), st.booleans(), st.just([]), st.just({})))
    elif how == "unknown field":
        body[draw(st.text(min_size=1, max_size=16))] = draw(st.integers())
    elif how == "missing field":
        del body[draw(st.sampled_from(sorted(body)))]
    elif how == "schema":
        body["schema_version"] = draw(st.sampled_from([0, 1, 3, -1, 2**64, "2", 1.5, None, True]))
    elif how == "type":
        body["type"] = draw(st.one_of(st.sampled_from(["", "DEPLOY", "reboot", "deploy "]), st.text(max_size=8)))
    elif how == "long string":
        body["job_id"] = "j" * draw(st.sampled_from([129, 1000, 100_000]))
    elif how in ("nested", "too deep"):  # written as text: json.dumps itself would recurse too deep
        depth = draw(st.integers(1, 30) if how == "nested" else st.integers(33, 50_000))
        body["extra"] = "DEEP"
        return json.dumps(body).encode().replace(b'"DEEP"', b"[" * depth + b"0" + b"]" * depth)
    elif how == "bytes":
        return draw(st.binary(max_size=512))
    elif how == "json":
        return json.dumps(draw(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                                st.text(max_size=8), inner, max_size=4), max_leaves=16))).encode()
    elif how == "literal":  # what json.dumps never writes but json.loads reads
        return draw(st.sampled_from([b'{"schema_version": 2, "type": "profile", "job_id": "x", "iterations": NaN}',
                                     b'{"schema_version": 2, "type": "profile", "job_id": "x", "iterations": 1e999}',
                                     b'{"schema_version": 2, "type": "set_config", "job_id": "x", '
                                     b'"telemetry_window_s": Infinity}', b'\xef\xbb\xbf{"schema_version": 2}', b""]))
    else:
        body["reason"] = "r" * 300_000  # beyond the 256 KiB a payload may have
    return json.dumps(body).encode()


@st.composite
def chunk_frame(draw: st.DrawFn, valid: bool) -> bytes:
    sha, data = draw(CHUNK_SHAS), draw(st.binary(max_size=64))
    count = draw(st.integers(1, 2**32))
    index = draw(st.integers(0, count - 1))
    frame = encode_chunk(sha, index, count, data)
    if valid:
        return frame
    how = draw(st.sampled_from(["bytes", "magic", "length", "hash", "cut"]))
    if how == "bytes":
        return draw(st.binary(max_size=256))
    if how == "magic":
        return b"CCK2" + frame[4:]
    if how == "length":
        return MAGIC + draw(st.sampled_from([0, 2**31, 2**32 - 1, 1025])).to_bytes(4, "big") + frame[8:]
    if how == "hash":
        return frame[:-1] + bytes([(frame[-1] + 1) % 256]) if data else frame + b"!"
    return frame[: draw(st.integers(0, len(frame) - 1))]


@st.composite
def message(draw: st.DrawFn, key: Ed25519PrivateKey) -> tuple[str, bytes]:
    """(topic, payload): about six valid in ten."""
    kind = draw(st.sampled_from(["command", "command", "command", "chunk", "chunk", "broken", "broken",
                                 "broken chunk", "command", "broken"]))
    if kind == "command":
        return topics.commands(DEVICE), draw(signed_command(key))
    if kind == "broken":
        return topics.commands(DEVICE), draw(broken_command(key_id(key.public_key())))
    sha = draw(CHUNK_SHAS)
    topic = draw(st.sampled_from([topics.device_chunks(DEVICE, sha), topics.group_chunks(GROUP, sha)]))
    return topic, draw(chunk_frame(kind == "chunk"))


def refused(topic: str, payload: bytes) -> bool:
    """Whether the agent must count this payload as malformed (the contract refuses it; a command of
    another schema version is refused as such, not counted as malformed)."""
    command = topics.parse(topic).kind is topics.TopicKind.COMMANDS
    try:
        if command:
            decode_command(payload)
        else:
            decode_chunk(payload)
    except ContractError:
        version = declared_version(payload) if command else None
        return version is None or version == COMMAND_SCHEMA_VERSION
    return False


def deploy_job(topic: str, payload: bytes) -> str | None:
    """The job id of a valid signed deploy command (it may create a job the harness cancels later)."""
    if topics.parse(topic).kind is not topics.TopicKind.COMMANDS:
        return None
    try:
        command = decode_command(payload)
    except ContractError:  # a command of another version: refused, not malformed
        return None
    return command.job_id if command.type == "deploy" and command.authorization is not None else None

