"""What the poison row sends the cloud (hypothesis strategies), and the oracle that says which of
it ingestion must dead-letter: the contract's own decoders (``Telemetry``, ``DeviceState``,
``decode_event``, ``MissingChunks``) plus the rule that a payload names its topic's device.

Valid payloads push fields to their limits: counts of 0 and 2**63 - 1, thousands of labels,
strings of the maximum length and unicode, far past and far future times, histograms of 256 bins,
missing-chunk reports of 2**63 - 1 chunks. Invalid ones: a field past its limit or of another
type, unknown or missing fields, other schema versions, nesting within and beyond 32 levels,
payloads beyond 256 KiB, random bytes and JSON, NaN literals, another device's id."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from benchmarks.faults.fuzz_payloads import EXTREME_FLOATS, EXTREME_INTS, JOB_IDS, NAMES, text
from contract import topics
from contract.errors import ContractError
from contract.events import decode_event
from contract.jobs import JobState
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import MissingChunks

DEVICES = ["poison-1", "poison-2", "p" * 64]
MAX = 2**63 - 1
COUNTS = st.one_of(st.sampled_from([0, 1, 2**31, 2**32, 2**53 + 1, MAX]), st.integers(0, MAX))
MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
LABELS = st.one_of(st.sampled_from(["apple", "can", "\u00e9" * 128, "x" * 128]), st.text(min_size=1, max_size=32))
FINITE = st.floats(min_value=0, max_value=1e300, allow_nan=False)


def label_counts(max_size: int = 64) -> st.SearchStrategy[dict[str, int]]:
    return st.one_of(st.dictionaries(LABELS, COUNTS, max_size=max_size),
                     st.just({f"label-{i}": MAX for i in range(600)}))  # sums far past 2**63


@st.composite
def histogram(draw: st.DrawFn) -> dict[str, Any]:
    bins = draw(st.sampled_from([1, 32, 256]))
    return {"edges": [float(i) for i in range(bins + 1)], "counts": draw(st.lists(COUNTS, min_size=bins,
                                                                                 max_size=bins))}


@st.composite
def latency(draw: st.DrawFn) -> dict[str, float]:
    values = sorted(draw(st.lists(FINITE, min_size=4, max_size=4)))
    return {"p50": values[0], "p95": values[1], "p99": values[2], "max": values[3], "mean": draw(FINITE)}


@st.composite
def bundle(draw: st.DrawFn) -> dict[str, Any]:
    return {"model_name": draw(NAMES), "model_version": draw(NAMES), "target": draw(NAMES),
            "sequence": draw(COUNTS), "sha256": draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))}


@st.composite
def telemetry(draw: st.DrawFn, device: str) -> dict[str, Any]:
    start, end = sorted([draw(MOMENTS), draw(MOMENTS)])
    return {"schema_version": 1, "device_id": device, "seq": draw(COUNTS), "window_start": start.isoformat(),
            "window_end": end.isoformat(), "bundle": draw(st.one_of(st.none(), bundle())),
            "inferences": draw(COUNTS), "errors": draw(label_counts()), "frames_skipped": draw(label_counts(4)),
            "predictions": draw(label_counts()), "inventory": draw(label_counts(8)),
            "latency_ms": draw(st.one_of(st.none(), latency())), "model_latency_ms": draw(st.one_of(st.none(),
                                                                                                   latency())),
            "input_stats": {"histograms": draw(st.dictionaries(st.sampled_from(["brightness", "contrast", "x"]),
                                                               histogram(), max_size=3))}}


@st.composite
def state(draw: st.DrawFn, device: str) -> dict[str, Any]:
    return {"schema_version": 1, "device_id": device, "online": draw(st.booleans()), "ts": draw(MOMENTS).isoformat(),
            "board": draw(st.one_of(st.none(), NAMES)), "agent_version": draw(st.one_of(st.none(), NAMES)),
            "active": draw(st.one_of(st.none(), bundle())), "previous": draw(st.one_of(st.none(), bundle())),
            "groups": draw(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True), max_size=32)),
            "job": draw(st.one_of(st.none(), st.fixed_dictionaries({"job_id": JOB_IDS,
                                                                    "state": st.sampled_from(list(JobState))})))}


@st.composite
def event(draw: st.DrawFn, device: str) -> dict[str, Any]:
    body = {"schema_version": 1, "device_id": device, "ts": draw(MOMENTS).isoformat(), "seq": draw(COUNTS)}
    kind = draw(st.sampled_from(["job", "error", "shadow"]))
    if kind == "job":
        return body | {"type": "job", "job_id": draw(JOB_IDS), "state": draw(st.sampled_from(list(JobState))),
                       "reason": draw(st.one_of(st.none(), text(2048)))}
    if kind == "error":
        return body | {"type": "error", "code": draw(NAMES), "message": draw(text(2048))}
    return body | {"type": "shadow", "job_id": draw(JOB_IDS), "frames": draw(COUNTS),
                   "agreement": draw(st.floats(0, 1))}


@st.composite
def missing(draw: st.DrawFn, device: str, sha: str) -> dict[str, Any]:
    count = draw(st.one_of(st.sampled_from([1, MAX]), st.integers(1, MAX)))
    first = draw(st.integers(0, count - 1))
    return {"schema_version": 1, "device_id": device, "sha256": sha, "chunk_count": count,
            "ranges": [[first, draw(st.integers(first + 1, count))]]}


@st.composite
def valid(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    device = draw(st.sampled_from(DEVICES))
    kind = draw(st.sampled_from(["telemetry", "telemetry", "telemetry", "state", "events", "missing"]))
    if kind == "telemetry":
        return topics.telemetry(device), draw(telemetry(device))
    if kind == "state":
        return topics.state(device), draw(state(device))
    if kind == "events":
        return topics.events(device), draw(event(device))
    sha = draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
    return topics.missing(device, sha), draw(missing(device, sha))


@st.composite
def broken(draw: st.DrawFn) -> tuple[str, bytes]:
    topic, body = draw(valid())
    how = draw(st.sampled_from(["field", "unknown field", "missing field", "schema", "nested", "too deep", "bytes",
                                "json", "literal", "huge", "other device", "past max"]))
    if how == "field":
        body[draw(st.sampled_from(sorted(body)))] = draw(st.one_of(
            st.sampled_from(EXTREME_INTS), st.sampled_from(EXTREME_FLOATS), st.text(max_size=8), st.none(),
            st.booleans(), st.just([]), st.just({}), st.just([[[]]])))
    elif how == "unknown field":
        body[draw(st.text(min_size=1, max_size=16))] = draw(st.integers())
    elif how == "missing field":
        del body[draw(st.sampled_from(sorted(body)))]
    elif how == "schema":
        body["schema_version"] = draw(st.sampled_from([0, 2, -1, 2**64, "1", 1.5, None]))
    elif how in ("nested", "too deep"):  # written as text: json.dumps itself would recurse too deep
        depth = draw(st.integers(1, 30) if how == "nested" else st.integers(33, 100_000))
        body["extra"] = "DEEP"
        return topic, json.dumps(body).encode().replace(b'"DEEP"', b"[" * depth + b"0" + b"]" * depth)
    elif how == "bytes":
        return topic, draw(st.binary(max_size=512))
    elif how == "json":
        return topic, json.dumps(draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=16))).encode()
    elif how == "literal":
        return topic, draw(st.sampled_from([b'{"schema_version": 1, "device_id": "poison-1", "seq": NaN}',
                                            b'{"schema_version": 1, "device_id": "poison-1", "seq": 1e999}',
                                            b'\xef\xbb\xbf{"schema_version": 1}', b""]))
    elif how == "huge":
        body["padding"] = "r" * draw(st.sampled_from([300_000, 2_000_000]))
    elif how == "other device":
        body["device_id"] = "poison-2" if body.get("device_id") != "poison-2" else "poison-1"
    else:
        key = draw(st.sampled_from([k for k in ("seq", "inferences", "chunk_count", "frames") if k in body] or
                                   ["schema_version"]))
        body[key] = draw(st.sampled_from([2**63, 2**64, 2**70, 10**40, -1]))
    return topic, json.dumps(body).encode()


@st.composite
def message(draw: st.DrawFn) -> tuple[str, bytes]:
    """(topic, payload): about six valid in ten."""
    if draw(st.integers(0, 9)) < 6:
        topic, body = draw(valid())
        return topic, json.dumps(body).encode()
    return draw(broken())


def refused(topic: str, payload: bytes) -> bool:
    """Whether ingestion must dead-letter this payload (the contract refuses it)."""
    try:
        parsed = topics.parse(topic)
        kind = parsed.kind
        if kind is topics.TopicKind.TELEMETRY:
            device = Telemetry.from_json(payload).device_id
        elif kind is topics.TopicKind.STATE:
            device = DeviceState.from_json(payload).device_id
        elif kind is topics.TopicKind.EVENTS:
            device = decode_event(payload).device_id
        else:
            report = MissingChunks.from_json(payload)
            if report.sha256 != parsed.sha256:
                return True
            device = report.device_id
    except ContractError:
        return True
    return device != parsed.device_id
