"""Ed25519 signing of manifests (and operator commands) with key rotation.

A signature file (``manifest.sig``) is a small JSON document naming the key that signed::

    {"schema_version": 1, "algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}

``key_id`` is the first 16 hex digits of sha256 over the raw 32-byte public key. A verifier
holds a :class:`TrustStore` of several public keys, each trusted in a :class:`Role` and accepted
only in it (an operator key cannot sign a bundle, a bundle-signing key cannot sign a command), so
keys can be rotated: devices trust the old and the new key while bundles are re-signed, then the old
key is revoked (root-signed trust documents: ``contract.trust``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from contract.base import Message, decode
from contract.compat import StrEnum
from contract.errors import (
    ExpiredKeyError,
    KeyFileError,
    PayloadError,
    RevokedKeyError,
    SignatureError,
    UntrustedKeyError,
    WrongRoleError,
)

KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]


class SignatureFile(Message):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: KeyId
    signature: Annotated[str, Field(min_length=1, max_length=128)]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
    return save_keypair(directory, name, generate_private_key(), force)


def save_keypair(directory: Path, name: str, key: Ed25519PrivateKey, force: bool = False) -> KeyPairPaths:
    """Write ``key`` as ``<name>.key`` (0600) and ``<name>.pub``, refusing to overwrite unless ``force``."""
    directory.mkdir(parents=True, exist_ok=True)
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


class Role(StrEnum):
    """What a trusted key may sign; a key is accepted only in its role."""

    ROOT = "root"  # trust documents (the keys and revocations below); kept offline
    BUNDLE_SIGNER = "bundle-signer"  # bundle manifests
    OPERATOR = "operator"  # commands (rollbacks today)


LEGACY_ROLES = frozenset({Role.BUNDLE_SIGNER, Role.OPERATOR})
"""What a key from a flat list (``trusted_keys``, ``--trusted`` on the command line) is trusted as:
both roles, as before roles existed. Role-specific lists and trust documents trust a key in one role."""


@dataclass(frozen=True)
class TrustEntry:
    public_key: Ed25519PublicKey
    roles: frozenset[Role]
    not_after: datetime | None = None


class TrustStore:
    """The public keys a verifier accepts, by key id, each in its role(s), with the key ids a
    root-signed trust document revoked. ``version``/``issued_at`` come from that document (0/None
    for keys from files). Key expiry is judged against :meth:`trusted_now`: the wall clock, but
    never earlier than the newest root-signed ``issued_at`` the store holds (a clock reset to 1970
    does not revive keys that had expired when the trust document was issued)."""

    def __init__(self, entries: Mapping[str, TrustEntry] | None = None, revoked: Iterable[str] = (),
                 version: int = 0, issued_at: datetime | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self._entries = dict(entries or {})
        self.revoked = frozenset(revoked)
        self.version, self.issued_at, self.clock = version, issued_at, clock

    @classmethod
    def from_keys(cls, keys: Iterable[Ed25519PublicKey], roles: Iterable[Role] = LEGACY_ROLES) -> TrustStore:
        granted = frozenset(roles)
        return cls({key_id(k): TrustEntry(k, granted) for k in keys})

    @classmethod
    def from_paths(cls, paths: Iterable[Path], roles: Iterable[Role] = LEGACY_ROLES) -> TrustStore:
        """Load ``.pub`` files; a directory contributes every ``*.pub`` inside it."""
        files = _pub_files(paths)
        if not files:
            raise KeyFileError("no trusted public keys given: pass at least one .pub file or a folder of them")
        return cls.from_keys((load_public_key(f) for f in files), roles)

    @classmethod
    def from_role_paths(cls, by_role: Mapping[Role, Iterable[Path]]) -> TrustStore:
        """Keys from one list per role; a key listed under two roles is trusted in both."""
        entries: dict[str, TrustEntry] = {}
        for role, paths in by_role.items():
            for path in _pub_files(paths):
                key = load_public_key(path)
                kid = key_id(key)
                before = entries.get(kid)
                entries[kid] = TrustEntry(key, (before.roles if before else frozenset()) | {role})
        if not entries:
            raise KeyFileError("no trusted public keys given: pass at least one .pub file or a folder of them")
        return cls(entries)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._entries)

    def keys_for(self, role: Role) -> list[str]:
        return sorted(k for k, e in self._entries.items() if role in e.roles and k not in self.revoked)

    def entries(self) -> dict[str, TrustEntry]:
        return dict(self._entries)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        entry = self._entries.get(kid)
        return None if entry is None else entry.public_key

    def replace(self, other: TrustStore) -> None:
        """Take ``other``'s keys in place (a root-signed update): every holder of this store sees them."""
        self._entries, self.revoked = dict(other._entries), other.revoked
        self.version, self.issued_at = other.version, other.issued_at

    def trusted_now(self) -> datetime:
        now = self.clock()
        return now if self.issued_at is None or now >= self.issued_at else self.issued_at

    def check(self, kid: str, role: Role) -> Ed25519PublicKey:
        """The public key of ``kid`` if it may sign as ``role`` now; else why not."""
        if kid in self.revoked:
            raise RevokedKeyError(f"signed by key {kid}, which was revoked by trust document version "
                                  f"{self.version}: nothing it signs is accepted")
        entry = self._entries.get(kid)
        if entry is None:
            trusted = ", ".join(self.keys_for(role)) or "none"
            raise UntrustedKeyError(
                f"signed by key {kid}, which is not trusted here (trusted {role.value} keys: {trusted}); "
                "add its .pub to the trusted keys if it is yours")
        if role not in entry.roles:
            held = ", ".join(sorted(r.value for r in entry.roles))
            raise WrongRoleError(f"signed by key {kid}, which is trusted here only as {held}: this needs a "
                                 f"{role.value} key (a key is accepted only in its role)")
        now = self.trusted_now()
        if entry.not_after is not None and now > entry.not_after:
            raise ExpiredKeyError(
                f"signed by key {kid} ({role.value}), valid until {entry.not_after:%Y-%m-%dT%H:%M:%SZ}; "
                f"this device's trusted time is {now:%Y-%m-%dT%H:%M:%SZ} (its clock, or the issue time of its "
                "trust document when the clock is earlier): if the clock is wrong, set it; else rotate the key")
        return entry.public_key


def _pub_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.pub")) if path.is_dir() else [path])
    return files


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``data``; returns the signature file's bytes."""
    sig = SignatureFile(key_id=key_id(private_key.public_key()),
                        signature=base64.b64encode(private_key.sign(data)).decode())
    return sig.to_json()


def verify(data: bytes, signature_file: bytes, trust: TrustStore, role: Role = Role.BUNDLE_SIGNER) -> str:
    """Check ``signature_file`` over ``data`` against the trust store, by a key trusted as ``role``
    (a manifest: a bundle-signer); returns the signing key id."""
    try:
        sig = decode(SignatureFile, signature_file)
    except PayloadError as exc:
        raise SignatureError(f"signature file is malformed: {exc}") from exc
    public = trust.check(sig.key_id, role)
    try:  # ValueError: not base64 (binascii.Error), or not ASCII at all (b64decode of a str)
        public.verify(base64.b64decode(sig.signature, validate=True), data)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(
            f"signature by key {sig.key_id} does not match the signed bytes: the manifest or the signature "
            "was changed after signing; do not install it"
        ) from exc
    return sig.key_id


def verify_signature(data: bytes, kid: str, signature_b64: str, trust: TrustStore, role: Role) -> None:
    """Verify a detached signature (e.g. an operator's rollback authorization) by a key trusted as ``role``."""
    signature_file = SignatureFile(key_id=kid, signature=signature_b64).to_json()
    verify(data, signature_file, trust, role)


def sign_detached(data: bytes, private_key: Ed25519PrivateKey) -> tuple[str, str]:
    """(key id, base64 signature) over ``data``: what an authorization or a trust document carries."""
    return key_id(private_key.public_key()), base64.b64encode(private_key.sign(data)).decode()
