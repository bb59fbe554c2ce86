from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contract import signing
from contract.commands import COMMAND_TTL_S, RollbackCommand, content_sha256, sign_command, verify_command
from contract.errors import KeyFileError, SignatureError, UntrustedKeyError
from contract.manifest import dump_manifest, load_manifest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def manifest_bytes() -> bytes:
    return dump_manifest(load_manifest((GOLDEN / "manifest.json").read_bytes()))


def test_keypair_files_are_safe(tmp_path: Path) -> None:
    pair = signing.write_keypair(tmp_path / "keys", "ops")
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public.stat().st_mode) == 0o644
    assert pair.key_id == signing.key_id(signing.load_public_key(pair.public))
    with pytest.raises(KeyFileError, match="already exists"):
        signing.write_keypair(tmp_path / "keys", "ops")
    again = signing.write_keypair(tmp_path / "keys", "ops", force=True)
    assert again.key_id != pair.key_id


def test_sign_verify_and_one_byte_change(tmp_path: Path, manifest_bytes: bytes) -> None:
    pair = signing.write_keypair(tmp_path, "k")
    sig = signing.sign(manifest_bytes, signing.load_private_key(pair.private))
    trust = signing.TrustStore.from_paths([pair.public])
    assert signing.verify(manifest_bytes, sig, trust) == pair.key_id
    for position in (0, len(manifest_bytes) // 2, len(manifest_bytes) - 1):
        tampered = bytearray(manifest_bytes)
        tampered[position] ^= 0x01
        with pytest.raises(SignatureError, match="does not match the signed bytes"):
            signing.verify(bytes(tampered), sig, trust)


def test_untrusted_key_and_rotation(tmp_path: Path, manifest_bytes: bytes) -> None:
    old = signing.write_keypair(tmp_path / "trusted", "old")
    new = signing.write_keypair(tmp_path / "staging", "new")
    sig_new = signing.sign(manifest_bytes, signing.load_private_key(new.private))
    only_old = signing.TrustStore.from_paths([tmp_path / "trusted"])
    with pytest.raises(UntrustedKeyError, match=f"key {new.key_id}, which is not trusted"):
        signing.verify(manifest_bytes, sig_new, only_old)
    rotating = signing.TrustStore.from_paths([tmp_path / "trusted", new.public])
    assert rotating.key_ids == sorted([old.key_id, new.key_id])
    assert signing.verify(manifest_bytes, sig_new, rotating) == new.key_id


def test_forged_signature_file(tmp_path: Path, manifest_bytes: bytes) -> None:
    pair = signing.write_keypair(tmp_path, "k")
    trust = signing.TrustStore.from_paths([pair.public])
    sig = json.loads(signing.sign(manifest_bytes, signing.load_private_key(pair.private)))
    sig["signature"] = "A" * 86 + "=="
    with pytest.raises(SignatureError):
        signing.verify(manifest_bytes, json.dumps(sig).encode(), trust)
    with pytest.raises(SignatureError, match="malformed"):
        signing.verify(manifest_bytes, b"not a signature", trust)


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        signing.load_private_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        signing.load_public_key(junk)
    with pytest.raises(KeyFileError, match="cannot read public key"):
        signing.TrustStore.from_paths([tmp_path / "missing.pub"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match="no trusted public keys"):
        signing.TrustStore.from_paths([tmp_path / "empty"])


def test_a_signed_command_binds_device_job_times_and_content(tmp_path: Path) -> None:
    operator = signing.generate_private_key()
    trust = signing.TrustStore.from_keys([operator.public_key()], [signing.Role.OPERATOR])
    body = RollbackCommand.from_json((GOLDEN / "command_rollback.json").read_bytes())
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    command = sign_command(body, operator, "fridge-0001", now)
    assert verify_command(command, trust) == signing.key_id(operator.public_key())
    assert command.expires_at == now + timedelta(seconds=COMMAND_TTL_S)
    again = sign_command(body, operator, "fridge-0001", now + timedelta(minutes=1))  # a re-send
    assert content_sha256(again) == content_sha256(command) and again.authorization != command.authorization
    for change in ({"reason": "something else"}, {"device_id": "fridge-0002"}, {"job_id": "other"},
                   {"expires_at": now + timedelta(hours=20)}):
        with pytest.raises(SignatureError, match="does not match the signed bytes"):
            verify_command(command.model_copy(update=change), trust)
    signer_only = signing.TrustStore.from_keys([operator.public_key()], [signing.Role.BUNDLE_SIGNER])
    with pytest.raises(SignatureError, match="needs a operator key"):
        verify_command(command, signer_only)
    with pytest.raises(SignatureError, match="carries no authorization"):
        verify_command(body.model_copy(update={"authorization": None}), trust)
    with pytest.raises(ValueError, match="at most 86400 s"):
        sign_command(body, operator, "fridge-0001", now, ttl_s=2 * 86400)
