"""Malformed payloads raise PayloadError with a message that names the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.base import MAX_PAYLOAD_BYTES, decode
from contract.commands import DeployCommand, SetConfigCommand, decode_command
from contract.errors import ContractError, PayloadError
from contract.events import decode_event
from contract.telemetry import Telemetry

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((GOLDEN / name).read_text())
    return data


def test_missing_field_is_named() -> None:
    data = _golden("telemetry.json")
    del data["seq"]
    with pytest.raises(PayloadError) as info:
        decode(Telemetry, json.dumps(data))
    assert "seq: Field required" in str(info.value)
    assert info.value.problems == ("seq: Field required",)


def test_missing_schema_version_is_explained() -> None:
    data = _golden("telemetry.json")
    del data["schema_version"]
    with pytest.raises(PayloadError, match="has no schema_version"):
        decode(Telemetry, json.dumps(data))


def test_oversized_field_is_refused() -> None:
    data = _golden("event_error.json")
    data["message"] = "x" * 5000
    with pytest.raises(PayloadError, match=r"message: String should have at most 2048 characters"):
        decode_event(json.dumps(data))


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadError, match="more than the"):
        decode(Telemetry, b" " * (MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("payload", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_garbage_is_a_contract_error(payload: bytes) -> None:
    with pytest.raises(ContractError):
        decode_command(payload)


def test_unknown_field_is_refused() -> None:
    data = _golden("command_cancel.json")
    data["surprise"] = 1
    with pytest.raises(PayloadError, match="surprise: Extra inputs are not permitted"):
        decode_command(json.dumps(data))


def test_unknown_command_type_lists_the_known_ones() -> None:
    data = _golden("command_cancel.json")
    data["type"] = "format_disk"
    with pytest.raises(PayloadError, match="deploy"):
        decode_command(json.dumps(data))


def test_semantic_checks() -> None:
    deploy = _golden("command_deploy.json")
    deploy["artifact"]["chunk_count"] = 3  # type: ignore[index]
    with pytest.raises(PayloadError, match="make 10 chunks, not 3"):
        decode(DeployCommand, json.dumps(deploy))
    with pytest.raises(ValueError, match="at least one"):
        SetConfigCommand(job_id="c")
    telemetry = _golden("telemetry.json")
    telemetry["window_end"] = "2026-11-26T11:00:00Z"
    with pytest.raises(PayloadError, match="window_end is before window_start"):
        decode(Telemetry, json.dumps(telemetry))
    telemetry = _golden("telemetry.json")
    telemetry["latency_ms"]["p95"] = 100.0  # type: ignore[index]
    with pytest.raises(PayloadError, match="p50 <= p95 <= p99 <= max"):
        decode(Telemetry, json.dumps(telemetry))


def test_bad_device_id_in_payload() -> None:
    data = _golden("telemetry.json")
    data["device_id"] = "fridge/+/1"
    with pytest.raises(PayloadError, match="device_id"):
        decode(Telemetry, json.dumps(data))


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deeply_nested_payloads_are_refused_before_parsing(depth: int) -> None:
    """A ~30 KB payload of nested arrays killed the agent and the cloud with RecursionError."""
    from contract.commands import decode_command
    from contract.telemetry import Telemetry

    nested = b'{"schema_version": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    for parse in (Telemetry.from_json, decode_command):
        with pytest.raises(PayloadError, match="nests"):
            parse(nested)


def test_brackets_inside_strings_do_not_count() -> None:
    from contract.base import nesting

    assert nesting(b'{"a": [1, {"b": "[[[[\\"]]{{{"}]}') == 3
    assert nesting(b'{"deep": "' + b"[" * 10_000 + b'"}') == 1
