"""Every golden example decodes with its decoder and re-encodes to the same JSON. ``*_vN.json`` are
older versions a reader still takes (what an agent of the commit before issue 13 sends)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contract.acks import TelemetryAck
from contract.base import decode
from contract.commands import decode_command
from contract.events import decode_event
from contract.local import decode_answer, decode_request
from contract.manifest import Manifest, dump_manifest, load_manifest
from contract.signing import SignatureFile
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import ChunkHeader, MissingChunks

GOLDEN = Path(__file__).parent / "golden"

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "state": lambda b: decode(DeviceState, b),
    "telemetry": lambda b: decode(Telemetry, b),
    "event": decode_event,
    "command": decode_command,
    "chunk": lambda b: decode(ChunkHeader, b),
    "missing": lambda b: decode(MissingChunks, b),
    "ack": lambda b: decode(TelemetryAck, b),
    "signature": lambda b: decode(SignatureFile, b),
    "manifest": load_manifest,
    "request": decode_request,  # the local API (contract.local)
    "answer": decode_answer,
}

FILES = sorted(GOLDEN.glob("*.json"))


def _decoder(path: Path) -> Callable[[bytes], Any]:
    return DECODERS[path.stem.split("_")[0]]


def _version(path: Path) -> int:
    """An older example's version (its ``_vN`` suffix), else the version the code writes (the model's default)."""
    suffix = path.stem.rpartition("_v")[2]
    if suffix.isdigit():
        return int(suffix)
    return int(type(_decoder(path)(path.read_bytes())).model_fields["schema_version"].default)


def test_every_message_kind_has_a_golden_example() -> None:
    kinds = {p.stem.split("_")[0] for p in FILES}
    assert kinds == set(DECODERS)
    commands = {json.loads(p.read_text())["type"] for p in FILES if p.stem.startswith("command_")}
    assert commands == {"deploy", "rollback", "cancel", "profile", "set_config", "shadow_start", "shadow_stop"}
    events = {json.loads(p.read_text())["type"] for p in FILES if p.stem.startswith("event_")}
    assert events == {"job", "error", "self_test", "shadow", "profile"}
    requests = {json.loads(p.read_text())["type"] for p in FILES if p.stem.startswith("request_")}
    assert requests == {"infer", "status", "subscribe", "hold_activation", "release_activation"}
    answers = {json.loads(p.read_text())["type"] for p in FILES if p.stem.startswith("answer_")}
    assert answers == {"result", "inventory", "model", "job", "status", "ok", "error"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_round_trip(path: Path) -> None:
    raw = path.read_bytes()
    message = _decoder(path)(raw)
    again = json.loads(message.model_dump_json(by_alias=True))
    assert again == json.loads(raw)
    assert again["schema_version"] == _version(path)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_rejects_wrong_schema_version(path: Path) -> None:
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version 99 is not supported"):
        _decoder(path)(json.dumps(data).encode())


def test_manifest_canonical_bytes_are_stable() -> None:
    manifest = load_manifest((GOLDEN / "manifest.json").read_bytes())
    first = dump_manifest(manifest)
    assert dump_manifest(load_manifest(first)) == first
    assert isinstance(manifest, Manifest)
    assert manifest.model_file.path == "model.onnx"
