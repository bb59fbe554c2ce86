"""Ed25519 signing of manifests (and operator commands) with key rotation.

A signature file (``manifest.sig``) is a small JSON document naming the key that signed::

    {"schema_version": 1, "algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}

``key_id`` is the first 16 hex digits of sha256 over the raw 32-byte public key. A verifier
holds a :class:`TrustStore` of several public keys, so keys can be rotated: devices trust
the old and the new key while bundles are re-signed, then the old key is removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from contract.base import Message, decode
from contract.errors import KeyFileError, PayloadError, SignatureError, UntrustedKeyError

KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]


class SignatureFile(Message):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: KeyId
    signature: Annotated[str, Field(min_length=1, max_length=128)]


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists: pass --force to overwrite it, or choose another name") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is masked by umask; set it exactly


@dataclass(frozen=True)
class KeyPairPaths:
    private: Path
    public: Path
    key_id: str


def write_keypair(directory: Path, name: str = "coldchain", force: bool = False) -> KeyPairPaths:
    """Generate a key pair: ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` (PEM, 0644)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    _write_new(private, private_pem, 0o600, force)
    _write_new(public, public_pem, 0o644, force)
    return KeyPairPaths(private, public, key_id(key.public_key()))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


class TrustStore:
    """The public keys a verifier accepts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys = {key_id(k): k for k in keys}

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustStore:
        """Load ``.pub`` files; a directory contributes every ``*.pub`` inside it."""
        files: list[Path] = []
        for path in paths:
            files.extend(sorted(path.glob("*.pub")) if path.is_dir() else [path])
        if not files:
            raise KeyFileError("no trusted public keys given: pass at least one .pub file or a folder of them")
        return cls(load_public_key(f) for f in files)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``data``; returns the signature file's bytes."""
    sig = SignatureFile(key_id=key_id(private_key.public_key()),
                        signature=base64.b64encode(private_key.sign(data)).decode())
    return sig.to_json()


def verify(data: bytes, signature_file: bytes, trust: TrustStore) -> str:
    """Check ``signature_file`` over ``data`` against the trust store; returns the signing key id."""
    try:
        sig = decode(SignatureFile, signature_file)
    except PayloadError as exc:
        raise SignatureError(f"signature file is malformed: {exc}") from exc
    public = trust.get(sig.key_id)
    if public is None:
        raise UntrustedKeyError(
            f"signed by key {sig.key_id}, which is not trusted here (trusted: {', '.join(trust.key_ids) or 'none'}); "
            "add its .pub to the trusted keys if it is yours"
        )
    try:
        public.verify(base64.b64decode(sig.signature, validate=True), data)
    except (InvalidSignature, binascii.Error) as exc:
        raise SignatureError(
            f"signature by key {sig.key_id} does not match the signed bytes: the manifest or the signature "
            "was changed after signing; do not install it"
        ) from exc
    return sig.key_id


def verify_signature(data: bytes, kid: str, signature_b64: str, trust: TrustStore) -> None:
    """Verify a detached signature (e.g. an operator's rollback authorization) against the trust store."""
    signature_file = SignatureFile(key_id=kid, signature=signature_b64).to_json()
    verify(data, signature_file, trust)
