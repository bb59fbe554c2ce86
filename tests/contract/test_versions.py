"""Every change to the wire format or to the signed bytes bumps a version (issue 13).

``SHAPES`` pins, per message kind and version, a hash of what a reader accepts (the JSON schema of
the model: field names, types, required fields and bounds; titles and descriptions left out). A
change to a model that keeps its version fails here: bump the version (``schema_version``, or the
manifest's / trust document's ``schema``; ``contract.versions.AGENT_PROTOCOL`` too when an older
agent cannot follow it) and add the new version's hash; older entries stay as the history.
``SIGNED`` pins the exact bytes signed for the golden examples (manifest, trust document), so a
change to the canonical form fails the same way. The golden examples carry the version the code
writes (``tests/contract/test_golden.py``); ``*_vN.json`` are older versions still read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import commands
from contract.acks import TelemetryAck
from contract.commands import COMMAND, Command, decode_command
from contract.events import EVENT, Event
from contract.manifest import MANIFEST_SCHEMA, Manifest, dump_manifest, load_manifest
from contract.signing import Role, SignatureFile
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import ChunkHeader, MissingChunks
from contract.trust import TRUST_SCHEMA, SignedTrust, TrustDocument, TrustedKey, sign_trust
from contract.versions import AGENT_PROTOCOL, PROTOCOLS, STATE_SCHEMA_VERSION, STATE_VERSIONS

GOLDEN = Path(__file__).parent / "golden"

# kind -> (the version the code writes now, the reader's JSON schema)
MODELS: dict[str, tuple[Callable[[], str], Callable[[], dict[str, Any]]]] = {
    "state": (lambda: f"v{_default(DeviceState)}", DeviceState.model_json_schema),
    "telemetry": (lambda: f"v{_default(Telemetry)}", Telemetry.model_json_schema),
    "event": (lambda: f"v{_union_default(Event)}", EVENT.json_schema),
    "command": (lambda: f"v{_union_default(Command)}", COMMAND.json_schema),
    "chunk": (lambda: f"v{_default(ChunkHeader)}", ChunkHeader.model_json_schema),
    "missing": (lambda: f"v{_default(MissingChunks)}", MissingChunks.model_json_schema),
    "ack": (lambda: f"v{_default(TelemetryAck)}", TelemetryAck.model_json_schema),
    "signature": (lambda: f"v{_default(SignatureFile)}", SignatureFile.model_json_schema),
    "manifest": (lambda: f"{MANIFEST_SCHEMA} v{_default(Manifest)}", lambda: Manifest.model_json_schema(by_alias=True)),
    "trust": (lambda: f"{TRUST_SCHEMA} v{_default(SignedTrust)}",
              lambda: {"signed": SignedTrust.model_json_schema(),
                       "document": TrustDocument.model_json_schema(by_alias=True)}),
}

SHAPES: dict[tuple[str, str], str] = {
    ("state", "v1"): "(before issue 13: no protocol; still read, see contract.versions.STATE_VERSIONS)",
    ("state", "v2"): "d5926437c13370c060bc992f48dc737538369ab49a18362395af38076dc9431d",
    # a job may be READY (issue 14, branch w-fw-device)
    ("state", "v3"): "9e938d1c47ebd91cd64386f8bc44fc07baf4777c4192f94961bdcb9b482aa6a7",
    # sent by agents of protocol 3, which read coldchain.manifest/v4 (issue 15, branch w-overhead)
    ("state", "v4"): "480bc6cffab94b47f932601a4342e3c00f688da6443f55643c7356f30feb9202",
    # faults: what is wrong on the device now (issue 14, branch w-faults)
    ("state", "v5"): "218e375a4afdf0ea273df8d37822ad019c67be5b1e813d694198fa01a0da8e49",
    ("telemetry", "v1"): "fb47fca12834a19a1b0ee7feded032173a5f880a60f81ad081015362ac8f3e14",
    ("event", "v1"): "882475e7f6607b105b2311581e69d98b25ba3ee6d655cdab04fee9b9491b1204",
    ("event", "v2"): "536099c39ed9935dd4d088e878d26a0e01b260c6e2feb3c3ee6bcea8dc7b7416",  # job state READY (issue 14)
    ("command", "v1"): "09488c60a4a1ec9461a55df4caf22441ee546515b7f373cc0cfebd9cec5870fd",
    # signed, bound to one device (issue 13, branch w-sign): agent protocol 2
    ("command", "v2"): "31b6a61d84b50f2d0fc563d514bc39373b7348d309b6f4e3a764256b514ae8a3",
    ("chunk", "v1"): "bf0a25e02429b875cec1f5c283c4eb9d8f09615ccc841dee115b82a5bacf5cbd",
    ("missing", "v1"): "06ff0f846a162203757e62c8ea40743414556035be82ef8951064e1941ac6037",
    ("ack", "v1"): "45796e350afaf9e767ee44ccd708af3793b1234286b4dd9013e9982caa98ba7e",
    ("signature", "v1"): "ef7b9277e4a1cc1bbbdbecb6749aefc9477aaca187a87d7dfdf26ce2ee7d6cc8",
    ("manifest", "coldchain.manifest/v2 v1"): "(before issue 13: no boards; still read)",
    ("manifest", "coldchain.manifest/v3 v1"): "afdea4049eb1d219ec9335066241e03949335626453e716bdbaa8391b06604a1",
    # short-side resize, centre crop, interpolation (issue 15, branch w-overhead): agent protocol 3
    ("manifest", "coldchain.manifest/v4 v1"): "617ef1501446c1d98ed9acc26a432db5c47ad2ec43324c8b9c0d2cc99830faaf",
    ("trust", "coldchain.trust/v1 v1"): "4fc19124c417091ce9a30e61fcbbff1a7ac45dc404c9666d0ce0c2447aecdd4b",
}

SIGNED: dict[tuple[str, str], str] = {
    ("command", "v1"): "d0b76c4c3395bea9d457e49301ff58e01b63dc1682a77f3da409034c049db075",  # rollbacks only
    ("command", "v2"): "1053c75913b462b767745a82df208b96015454e3935e9e015e20d9108118e8b2",
    ("manifest", "coldchain.manifest/v3 v1"): "fc70fa899fcdfc9f45bda73a588c18dcc76049a08aeccf715d20a6cc4b239914",
    # the same bytes: a manifest without v4 preprocessing signs as before
    ("manifest", "coldchain.manifest/v4 v1"): "fc70fa899fcdfc9f45bda73a588c18dcc76049a08aeccf715d20a6cc4b239914",
    ("trust", "coldchain.trust/v1 v1"): "d48e91df09d67822d4f0144dd37cb418da6528f09933e50a9942a2daa90ed749",
}


def _default(model: Any) -> int:
    return int(model.model_fields["schema_version"].default)


def _union_default(annotated: Any) -> int:
    """The one version every member of a message union (``Annotated[A | B, discriminator]``) writes."""
    versions = {_default(member) for member in get_args(get_args(annotated)[0])}
    assert len(versions) == 1, f"the members of one message union write different versions: {versions}"
    return versions.pop()


def _stripped(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _stripped(v) for k, v in sorted(schema.items()) if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_stripped(v) for v in schema]
    return schema


def shape(kind: str) -> str:
    schema = _stripped(MODELS[kind][1]())
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _trust_signed_text() -> bytes:
    """A trust document from fixed keys and time, as root signs it (Ed25519 is deterministic)."""
    root, operator = (Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n in (1, 2))
    document = TrustDocument(version=1, issued_at=datetime(2026, 11, 26, 12, tzinfo=UTC),
                             keys=[TrustedKey.of(root.public_key(), Role.ROOT),
                                   TrustedKey.of(operator.public_key(), Role.OPERATOR)])
    return sign_trust(document, [root]).to_json()


def _command_signed_bytes() -> bytes:
    """What an operator key signs for the golden rollback (device, job, times, content hash)."""
    command = decode_command((GOLDEN / "command_rollback.json").read_bytes())
    return commands.signed_bytes(command)


SIGNERS: dict[str, Callable[[], bytes]] = {
    "manifest": lambda: dump_manifest(load_manifest((GOLDEN / "manifest.json").read_bytes())),
    "command": _command_signed_bytes,
    "trust": _trust_signed_text,
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_changed_message_shape_bumps_its_version(kind: str) -> None:
    version = MODELS[kind][0]()
    pinned = SHAPES.get((kind, version))
    assert pinned is not None, (f"{kind} is now version {version!r}: add its shape {shape(kind)} to SHAPES (and the "
                                "agent protocol, if an older agent cannot follow it)")
    assert shape(kind) == pinned, (f"the {kind} messages changed (shape {shape(kind)}) but are still version "
                                   f"{version!r} (pinned {pinned}): bump the version, then pin the new shape")


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_changed_signed_bytes_bump_the_version(kind: str) -> None:
    version = MODELS[kind][0]()
    signed = hashlib.sha256(SIGNERS[kind]()).hexdigest()
    assert SIGNED.get((kind, version)) == signed, (
        f"the bytes signed for a {kind} ({signed}) are not those pinned for version {version!r}: a change to the "
        "canonical form needs a new version, then pin it")


def test_the_state_window_and_protocols_are_consistent() -> None:
    assert STATE_VERSIONS[-1] == STATE_SCHEMA_VERSION == _default(DeviceState)
    assert set(PROTOCOLS) == set(range(1, AGENT_PROTOCOL + 1))
    for version in STATE_VERSIONS:
        golden = GOLDEN / ("state.json" if version == STATE_SCHEMA_VERSION else f"state_v{version}.json")
        assert DeviceState.from_json(golden.read_bytes()).schema_version == version


def test_state_v5_carries_the_current_faults_and_older_states_none() -> None:
    """Version 5 adds ``faults``: what is wrong on the device now (a closed set of codes, since when, a
    bounded message). Older states have no such field (the cloud reads them as fault-free) and dump
    without it, as their agents wrote them."""
    from contract.errors import PayloadError
    from contract.state import Fault, FaultCode

    golden = json.loads((GOLDEN / "state.json").read_text())
    state = DeviceState.from_json(json.dumps(golden))
    assert state.schema_version == 5 and [f.code for f in state.faults] == [FaultCode.SOURCE_UNAVAILABLE]
    assert json.loads(state.to_json())["faults"] == golden["faults"]
    since = datetime(2026, 11, 26, 11, 58, tzinfo=UTC)
    both = DeviceState(device_id="d1", online=True, faults=[
        Fault(code=FaultCode.SOURCE_UNAVAILABLE, since=since, message="x" * 512),
        Fault(code=FaultCode.SPOOL_FULL, since=since, message="")])
    assert DeviceState.from_json(both.to_json()) == both
    for bad, why in ((golden["faults"] * 2, "source_unavailable is reported twice"),
                     ([{**golden["faults"][0], "code": "gremlins"}], "faults.0.code"),
                     ([{**golden["faults"][0], "message": "x" * 513}], "faults.0.message"),
                     ([golden["faults"][0]] * 9, "faults")):
        with pytest.raises(PayloadError, match=why):
            DeviceState.from_json(json.dumps({**golden, "faults": bad}))
    for version in (1, 2, 3, 4):
        old = json.loads((GOLDEN / f"state_v{version}.json").read_text())
        assert "faults" not in old and DeviceState.from_json(json.dumps(old)).faults == []
        assert "faults" not in json.loads(DeviceState.from_json(json.dumps(old)).to_json())
        with pytest.raises(PayloadError, match=f"a version {version} state has no faults"):
            DeviceState.from_json(json.dumps({**old, "faults": golden["faults"]}))
