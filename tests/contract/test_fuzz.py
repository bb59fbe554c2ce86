"""Property-based fuzzing of every contract entry point that reads outside bytes: arbitrary bytes
and hostile mutations of each golden example (tests/hostile.py) raise only the contract's own
errors (contract/errors.py), never a ValueError, OverflowError, RecursionError or UnicodeError
of the standard library or pydantic, and whatever decodes can be encoded and used again."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.faults.hostile import signed_head, special, tar_gz, zeros
from contract.acks import TelemetryAck
from contract.base import Message, decode
from contract.bundle import pack, unpack, verify_dir
from contract.commands import Authorization, Command, declared_version, decode_command, signed_bytes, verify_command
from contract.errors import ContractError, SignatureError, TrustUpdateError
from contract.events import decode_event
from contract.local import decode_answer, decode_request
from contract.manifest import Manifest, dump_manifest, load_manifest
from contract.signing import (
    Role,
    SignatureFile,
    TrustStore,
    generate_private_key,
    key_id,
    sign,
    sign_detached,
    verify,
)
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import ChunkHeader, MissingChunks, decode_chunk, encode_chunk
from contract.trust import TrustDocument, TrustedKey, load_signed, sign_trust, verify_initial
from tests.hostile import FUZZ, GOLDEN, golden, payloads, render

KEY = generate_private_key()
TRUST = TrustStore.from_keys([KEY.public_key()])


def _used(decoded: Any) -> None:
    """What decoded is used as the readers use it: dumped (JSON and canonical bytes), compared."""
    if isinstance(decoded, Message):
        decoded.to_json()
        decoded.model_dump(mode="json")
    if isinstance(decoded, Manifest):
        dump_manifest(decoded)
    if isinstance(decoded, DeviceState | Telemetry):
        for stamp in (getattr(decoded, "ts", None), getattr(decoded, "window_end", None)):
            if stamp is not None:  # what the cloud does with a device's time (compare, subtract)
                aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
                _ = aware < datetime.now(UTC), (datetime.now(UTC) - aware).total_seconds()


def _command(payload: bytes) -> Command:
    command = decode_command(payload)
    verify_command(command, TRUST)  # an unsigned or forged one: SignatureError
    return command


def _signed_command(payload: bytes) -> Command:
    """A hostile command that a trusted operator key signed anyway (a cloud bug, a stolen key):
    verified, then its times compared as the agent's gate compares them."""
    command = decode_command(payload)
    kid, signature = sign_detached(signed_bytes(command), KEY)
    command = command.model_copy(update={"authorization": Authorization(key_id=kid, signature=signature)})
    verify_command(command, TRUST)
    now = datetime.now(UTC)
    _ = command.expires_at is None or command.expires_at <= now, now.timestamp() - command.issued_at.timestamp()
    return command


def _trust(payload: bytes) -> TrustDocument:
    """A provisioned trust document, verified, turned into a store and asked about a key now."""
    document = verify_initial(load_signed(payload))
    store = document.store()
    store.trusted_now()
    for key in document.keys:
        with contextlib.suppress(ContractError):
            store.check(key.key_id, key.role)
    return document


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "state": lambda b: decode(DeviceState, b),
    "telemetry": lambda b: decode(Telemetry, b),
    "event": decode_event,
    "command": _command,
    "chunk": lambda b: decode(ChunkHeader, b),
    "missing": lambda b: decode(MissingChunks, b),
    "ack": lambda b: decode(TelemetryAck, b),
    "signature": lambda b: verify(b"data", b, TRUST, Role.BUNDLE_SIGNER),
    "manifest": load_manifest,
    "request": decode_request,
    "answer": decode_answer,
}
EXAMPLES = sorted(p.name for p in GOLDEN.glob("*.json"))
GOLDEN_KEY_ID = "0123456789abcdef"


def example(name: str) -> Any:
    """A golden example, its signature (if any) made by a key trusted here, so mutations reach past the key id."""
    return json.loads((GOLDEN / name).read_text().replace(GOLDEN_KEY_ID, key_id(KEY.public_key())))


def check(decoder: Callable[[bytes], Any], payload: bytes) -> None:
    with contextlib.suppress(ContractError):  # the contract's own refusal: what every caller catches
        _used(decoder(payload))


@pytest.mark.parametrize("name", EXAMPLES)
def test_mutated_golden_examples_raise_only_contract_errors(name: str) -> None:
    decoder = DECODERS[name.removesuffix(".json").split("_")[0]]
    check(decoder, (GOLDEN / name).read_bytes())  # the example itself decodes (its signer is not trusted here)

    @FUZZ
    @given(payload=payloads(example(name)))
    def fuzz(payload: bytes) -> None:
        check(decoder, payload)
        if name.startswith("command_"):
            check(_signed_command, payload)

    fuzz()


@FUZZ
@given(payload=st.one_of(st.binary(max_size=200), payloads(golden("chunk_header.json")).map(
    lambda head: b"CCK1" + len(head).to_bytes(4, "big") + head + b"data")))
def test_chunk_frames_raise_only_contract_errors(payload: bytes) -> None:
    check(decode_chunk, payload)
    frame = encode_chunk("a" * 64, 0, 1, b"data")
    check(decode_chunk, frame[: len(payload) % len(frame)] + payload)


def _trust_payloads() -> st.SearchStrategy[bytes]:
    key = generate_private_key()
    document = TrustDocument(version=1, issued_at=datetime(2026, 1, 1, tzinfo=UTC),
                             keys=[TrustedKey.of(key.public_key(), Role.ROOT)], revoked=[])
    signed = sign_trust(document, [key])
    inner = document.model_dump(mode="json", by_alias=True)
    outer = signed.model_dump(mode="json")
    return st.one_of(payloads(outer), payloads(inner).map(
        lambda text: render({**outer, "signed": text.decode("utf-8", "replace")})))


@FUZZ
@given(payload=_trust_payloads())
def test_trust_documents_raise_only_contract_errors(payload: bytes) -> None:
    check(_trust, payload)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=200), payloads(golden("command_deploy.json"))))
def test_declared_version_never_raises(payload: bytes) -> None:
    version = declared_version(payload)
    assert version is None or isinstance(version, int)


def test_a_signature_file_over_fuzzed_bytes_still_verifies_only_its_own() -> None:
    """A sanity check that the fuzzing above reaches verification: a good signature verifies."""
    assert verify(b"data", sign(b"data", KEY), TRUST) == SignatureFile.model_validate_json(sign(b"data", KEY)).key_id


def test_a_signature_that_is_not_ascii_is_a_signature_error() -> None:
    """Found by the fuzzing above: a signature of non-ASCII text by a trusted key id raised a plain
    ValueError out of ``base64.b64decode`` (past every ``except ContractError`` of the agent)."""
    for signature in ("\U0001f600", "é" * 88, "\x00"):
        forged = SignatureFile(key_id=key_id(KEY.public_key()), signature=signature).to_json()
        with pytest.raises(SignatureError, match=r"does not match|NUL"):
            verify(b"data", forged, TRUST)
        command = decode_command((GOLDEN / "command_cancel.json").read_bytes()).model_copy(
            update={"authorization": Authorization(key_id=key_id(KEY.public_key()), signature=signature)})
        with pytest.raises(SignatureError):
            verify_command(command, TRUST)


def test_a_trust_document_signature_that_is_not_ascii_is_refused_by_name() -> None:
    root = generate_private_key()
    document = TrustDocument(version=1, issued_at=datetime(2026, 1, 1, tzinfo=UTC),
                             keys=[TrustedKey.of(root.public_key(), Role.ROOT)], revoked=[])
    signed = sign_trust(document, [root]).model_dump(mode="json")
    signed["signatures"][0]["signature"] = "\U0001f600"
    with pytest.raises(TrustUpdateError, match="no valid signature"):
        verify_initial(load_signed(render(signed)))


def _compressed(tar: bytes, how: str) -> bytes:
    return {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "none": bytes}[how](tar)


@st.composite
def _tarballs(draw: st.DrawFn, good: bytes) -> bytes:
    """A real signed bundle's tar, damaged (cut, bytes flipped, a PAX header added), in every
    compression ``tarfile`` reads (``r|*``); or bytes that only start like one."""
    raw = gzip.decompress(good)
    kind = draw(st.sampled_from(["cut", "flip", "pax", "garbage"]))
    if kind == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    elif kind == "pax":
        header = tarfile.TarInfo("manifest.json")
        header.pax_headers = {draw(st.sampled_from(["size", "path", "mtime", "uid", "hdrcharset", "linkpath"])):
                              draw(st.sampled_from(["-1", "1e309", "\x00", "../../x", "9" * 50, "", "BINARY"]))}
        with contextlib.suppress(ValueError, tarfile.TarError, UnicodeError):
            raw = header.tobuf(tarfile.PAX_FORMAT) + raw
    else:
        raw = draw(st.sampled_from([b"\x1f\x8b", b"BZh9", b"\xfd7zXZ\x00", b"ustar"])) + draw(st.binary(max_size=600))
        return raw if draw(st.booleans()) else _compressed(raw, draw(st.sampled_from(["gz", "bz2", "xz"])))
    compressed = _compressed(raw, draw(st.sampled_from(["gz", "bz2", "xz", "none"])))
    return compressed[: draw(st.integers(0, len(compressed)))] if draw(st.booleans()) else compressed


def test_damaged_bundle_tarballs_raise_only_bundle_errors(bundle: tuple[Path, TrustStore],
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    directory, trust = bundle
    good = pack(directory, tmp_path_factory.mktemp("packed") / "b.tar.gz").read_bytes()
    assert unpack(good, tmp_path_factory.mktemp("ok") / "out", trust).is_dir()

    @FUZZ
    @given(tarball=_tarballs(good))
    def fuzz(tarball: bytes) -> None:
        out = tmp_path_factory.mktemp("out") / "b"
        try:
            unpack(tarball, out, trust)
        except ContractError:
            assert not (out.parent / "escape").exists()
        else:  # whatever unpacks is the signed bundle, whole
            verify_dir(out, trust)

    fuzz()


def _entries(directory: Path) -> st.SearchStrategy[list[Any]]:
    """Tar entries in any order: the signed head and files, special members under a listed name,
    escaping, absolute, dotted and repeated names, a file bigger than declared, a 100 MB manifest
    (each drawn as a maker: a zero-filled entry is read once)."""
    head = signed_head(directory)
    files = [(name, (directory / name).read_bytes()) for name in ("model.onnx", "golden.npz")]
    plain = [*head, *files, ("../escape", b"x"), ("/tmp/escape", b"x"), ("./model.onnx", files[0][1]),
             ("model.onnx/", b"x"), ("model.onnx", files[0][1] + b"x"), ("golden.npz/../model.onnx", b"x"), ("", b"x")]
    makers: list[Callable[[], Any]] = [
        *[lambda entry=entry: entry for entry in plain],
        *[lambda kind=kind: special("model.onnx", kind, "/etc/passwd") for kind in (
            tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE)],
        lambda: zeros("manifest.json", 100 * 1024**2),  # (gzip bombs: tests/contract/test_bundle.py)
    ]
    return st.lists(st.sampled_from(makers), max_size=7).map(lambda rest: [*head, *(make() for make in rest)])


def test_hostile_bundle_members_raise_only_bundle_errors(bundle: tuple[Path, TrustStore],
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    directory, trust = bundle

    @FUZZ
    @given(entries=st.one_of(_entries(directory), _entries(directory).map(lambda e: e[2:])))
    def fuzz(entries: list[Any]) -> None:
        out = tmp_path_factory.mktemp("out") / "b"
        try:
            unpack(tar_gz(entries), out, trust)
        except ContractError:
            pass
        else:  # whatever unpacks is the signed bundle, whole, and nothing else
            verify_dir(out, trust)
        assert not (out.parent / "escape").exists() and not Path("/tmp/escape").exists()
        written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
        assert written <= sum(p.stat().st_size for p in directory.iterdir())

    fuzz()


def test_a_trust_document_with_times_without_a_zone_is_read_as_utc() -> None:
    """Found by reading what the fuzzing reached: a root-signed document whose ``issued_at`` or
    ``not_after`` has no zone made every key check raise TypeError (naive against aware times),
    so an agent holding it could verify no command and no bundle. Such times are UTC."""
    root, operator = generate_private_key(), generate_private_key()
    document = TrustDocument(version=1, issued_at=datetime(2026, 1, 1),
                             keys=[TrustedKey.of(root.public_key(), Role.ROOT),
                                   TrustedKey.of(operator.public_key(), Role.OPERATOR, not_after=datetime(2099, 1, 1))])
    store = verify_initial(load_signed(sign_trust(document, [root]).to_json())).store()
    assert store.trusted_now().tzinfo is not None
    store.check(key_id(operator.public_key()), Role.OPERATOR)
    assert document.issued_at == datetime(2026, 1, 1, tzinfo=UTC)
