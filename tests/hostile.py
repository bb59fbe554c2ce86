"""Hostile payloads for property-based fuzzing: hypothesis strategies that take a golden example
(tests/contract/golden) and break it the ways outside bytes arrive broken. A mutation drops,
duplicates or retypes a field anywhere in the tree, puts a huge, negative, float, NaN or overlong
number, a huge or odd string (surrogates, NUL, right-to-left marks), a far date or a deep nesting
in its place, or damages the text itself (cut, a byte flipped, not UTF-8, another encoding).
Values JSON cannot carry (a number of 5,000 digits, NaN, a lone surrogate, a duplicate key) are
written as raw text, so the payload is what a hostile sender could put on the wire."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

GOLDEN = Path(__file__).parent / "contract" / "golden"
_RAW = "\x00raw:{}\x00"
_PLACEHOLDER = re.compile(r'"\\u0000raw:((?:[^"\\]|\\.)*?)\\u0000"')
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
"""The fuzz files' hypothesis settings: EXAMPLES each, no deadline (a loaded 2-core host), large hostile inputs."""
"""Examples per property: small by default (the suite runs on a loaded host); raise it to hunt."""

NUMBERS = [
    "1" + "0" * 5000,  # over sys.get_int_max_str_digits(): int() refuses it with ValueError
    "-" + "9" * 4301, "9" * 4300, str(2**63), str(2**64), str(-(2**63) - 1), "-1", "0", "-0", "1e308", "1e309",
    "-1e309", "1.5", "0.000001", "1E400", "NaN", "Infinity", "-Infinity", "1" * 400 + ".5", "0." + "0" * 5000 + "1",
]
STRINGS = [
    "", "\x00", "a\x00b", "\ud800", "\udfff", "\ud83d\ude00", "\u202e", "\ufeff", "😀" * 300, "x" * 70_000,
    "/", "#", "+", "../../etc/passwd", "$share/x/y", "'; DROP TABLE devices; --", "%", "\\", "\n\r\t",
    "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-23:59", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z", "1e309", "nan", "-1", "a" * 64, "0" * 64, "Z" * 64, "PT1H",
]


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def raw(text: str) -> str:
    """A placeholder that ``render`` replaces by ``text`` verbatim (not quoted, not escaped)."""
    return _RAW.format(text)


def render(value: Any) -> bytes:
    """``value`` as JSON text, with each ``raw`` placeholder put back as the text it stands for."""
    text = _PLACEHOLDER.sub(lambda m: json.loads(f'"{m.group(1)}"'), json.dumps(value, ensure_ascii=True))
    return text.encode("utf-8", "surrogatepass")


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(NUMBERS).map(raw),
    st.sampled_from(STRINGS),
    st.sampled_from([_deep(40), _deep(3000), '{"a":' * 40 + "1" + "}" * 40]).map(raw),
    st.sampled_from([None, True, False, [], {}, [None], {"": None}, 0, -1, 2**31, 1.0, [1, 2, 3]]),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)


def edges(value: Any) -> st.SearchStrategy[Any]:
    """Values of ``value``'s own type at and past the usual bounds: what may still validate, so the
    code after validation sees them (the largest integer, a tiny or huge float, a string at 128 and
    2,048 characters, unicode of the same length)."""
    if isinstance(value, str) and _PLACEHOLDER.fullmatch(json.dumps(value)):
        return st.just(value)  # already hostile raw text
    if isinstance(value, bool) or value is None:
        return st.sampled_from([True, False, None])
    if isinstance(value, int):
        return st.sampled_from([0, 1, -1, value + 1, value - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 10**18])
    if isinstance(value, float):
        return st.sampled_from([0.0, -0.0, 5e-324, 1e-9, value * 1000, 1e15, 1.7e308, raw("NaN"), raw("Infinity")])
    if isinstance(value, str):
        return st.sampled_from([value + "\u202e", value.upper(), value + "x", "\u00e9" * len(value), "x" * 128,
                                "x" * 2048, "x" * 2049, value[:1], value + "\x00"])
    return st.just(value)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.extend(_paths(child, (*prefix, i)))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any, drop: bool = False) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        if drop and not rest:
            copy.pop(head, None)
        else:
            copy[head] = _replace(value[head], rest, new, drop)
        return copy
    copy_list = list(value)
    if drop and not rest:
        del copy_list[head]
    else:
        copy_list[head] = _replace(value[head], rest, new, drop)
    return copy_list


@st.composite
def mutated(draw: st.DrawFn, example: Any, gentle: bool = False) -> bytes:
    """``example`` (a decoded golden JSON) with one to three hostile changes, as payload bytes;
    ``gentle``: only values of the same type at the edges (``edges``), so most still validate."""
    value = example
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        action = "edge" if gentle else draw(st.sampled_from(["edge"] * 3 + ["replace", "replace", "drop", "add",
                                                                              "wrap"]))
        if action == "edge":
            old = value
            for part in path:
                old = old[part]
            value = _replace(value, path, draw(edges(old)))
        elif action == "drop" and path:
            value = _replace(value, path, None, drop=True)
        elif action == "add":
            parent = path[:-1] if path else ()
            target = value
            for part in parent:
                target = target[part]
            if isinstance(target, dict):
                key = draw(st.one_of(st.sampled_from(["extra", "schema_version", "type", "\ud800", ""]), st.text()))
                value = _replace(value, parent, {**target, key: draw(LEAVES)})
        elif action == "wrap":
            old = value
            for part in path:
                old = old[part]
            value = _replace(value, path, draw(st.sampled_from([[old], {"v": old}, [old, old]])))
        else:
            value = _replace(value, path, draw(LEAVES))
    payload = render(value)
    if gentle:
        return payload
    damage = draw(st.sampled_from(["none"] * 6 + ["duplicate", "cut", "flip", "encode", "prefix"]))
    if damage == "duplicate" and isinstance(value, dict) and value:  # a key twice: the last one wins in json
        key = draw(st.sampled_from(sorted(value, key=str)))
        payload = payload[:-1] + b"," + render({key: draw(LEAVES)})[1:]
    elif damage == "cut":
        payload = payload[: draw(st.integers(0, max(len(payload) - 1, 0)))]
    elif damage == "flip" and payload:
        at = draw(st.integers(0, len(payload) - 1))
        payload = payload[:at] + bytes([payload[at] ^ draw(st.integers(1, 255))]) + payload[at + 1:]
    elif damage == "encode":
        codec = draw(st.sampled_from(["utf-16", "utf-32", "utf-16-be"]))
        payload = payload.decode("utf-8", "replace").encode(codec)
    elif damage == "prefix":
        payload = draw(st.sampled_from([b"\xef\xbb\xbf", b" ", b"\x00", b"[", b"CCK1"])) + payload
    return payload


def payloads(example: Any) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or hostile mutations of ``example``."""
    return st.one_of(st.binary(max_size=300), mutated(example))
