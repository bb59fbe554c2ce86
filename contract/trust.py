"""Trust documents (``schema: coldchain.trust/v1``): the keys a device trusts, each in one role,
and the keys it must never trust again, signed by an offline ``root`` key.

A device keeps one (``trust.json``)::

    {"schema_version": 1, "signed": "<the document's canonical JSON>",
     "signatures": [{"key_id": "<16 hex>", "signature": "<base64 Ed25519 over the signed text>"}]}

The document: ``version`` (grows by one per change), ``issued_at``, ``keys`` ({key_id, role,
public_key (base64 raw 32 bytes), not_after?}), ``revoked`` (key ids). A new document replaces the
current one only when its version is higher and a root key of the *current* document signed it
(and, when the roots change, a root key of the new one too), so a compromised operator or
bundle-signing key is replaced without trusting it. At most two keys per role are valid at once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError, model_validator

from contract.base import MAX_INT, ContractModel, Message, UtcDatetime, decode, utc_now
from contract.errors import ContractError, PayloadError, TrustUpdateError
from contract.signing import KeyId, Role, TrustEntry, TrustStore, key_id, sign_detached

TRUST_SCHEMA: Final = "coldchain.trust/v1"
TRUST_FILE = "trust.json"
MAX_KEYS_PER_ROLE = 2
MAX_TRUST_BYTES = 64 * 1024


class TrustedKey(ContractModel):
    key_id: KeyId
    role: Role
    public_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}=$")]  # base64 of the raw 32 bytes
    not_after: UtcDatetime | None = None  # not for root: root keys change only by a trust document

    @model_validator(mode="after")
    def _consistent(self) -> TrustedKey:
        if key_id(self.key()) != self.key_id:
            raise ValueError(f"key_id {self.key_id} is not the id of the public key given")
        if self.role is Role.ROOT and self.not_after is not None:
            raise ValueError("a root key has no not_after: it is replaced by a root-signed trust document")
        return self

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(self.public_key))

    @classmethod
    def of(cls, public: Ed25519PublicKey, role: Role, not_after: datetime | None = None) -> TrustedKey:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key_id=key_id(public), role=role, public_key=base64.b64encode(raw).decode(), not_after=not_after)


class TrustDocument(Message):
    schema_: Literal["coldchain.trust/v1"] = Field(TRUST_SCHEMA, alias="schema")
    version: Annotated[int, Field(ge=1, le=MAX_INT)]
    issued_at: UtcDatetime = Field(default_factory=utc_now)
    keys: Annotated[list[TrustedKey], Field(min_length=1, max_length=3 * MAX_KEYS_PER_ROLE)]
    revoked: Annotated[list[KeyId], Field(max_length=1024)] = []

    model_config = {**Message.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _roles(self) -> TrustDocument:
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("a key appears twice: each key has exactly one role")
        for role in Role:
            count = sum(k.role is role for k in self.keys)
            if count > MAX_KEYS_PER_ROLE:
                raise ValueError(f"{count} {role.value} keys: at most {MAX_KEYS_PER_ROLE} per role are valid at "
                                 "once (revoke one when rotating)")
        if not any(k.role is Role.ROOT for k in self.keys):
            raise ValueError("a trust document needs at least one root key")
        both = sorted(set(ids) & set(self.revoked))
        if both:
            raise ValueError(f"keys {both} are listed as trusted and as revoked")
        return self

    def canonical(self) -> bytes:
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def roots(self) -> set[str]:
        return {k.key_id for k in self.keys if k.role is Role.ROOT}

    def store(self, clock: Callable[[], datetime] = utc_now) -> TrustStore:
        """The verifier for what this document trusts (every key in its one role)."""
        entries = {k.key_id: TrustEntry(k.key(), frozenset({k.role}), k.not_after) for k in self.keys}
        return TrustStore(entries, self.revoked, self.version, self.issued_at, clock)


class KeySignature(ContractModel):
    key_id: KeyId
    signature: Annotated[str, Field(min_length=1, max_length=128)]  # base64


class SignedTrust(Message):
    """A trust document's exact signed text and its root signatures (what ``trust.json`` holds)."""

    signed: Annotated[str, Field(min_length=2, max_length=MAX_TRUST_BYTES)]
    signatures: Annotated[list[KeySignature], Field(min_length=1, max_length=4)]

    def document(self) -> TrustDocument:
        try:
            return decode(TrustDocument, self.signed, MAX_TRUST_BYTES)
        except PayloadError as exc:
            raise TrustUpdateError(f"the trust document is malformed: {exc}") from exc

    def signers(self, document: TrustDocument, among: set[str]) -> set[str]:
        """The root key ids in ``among`` (ids of ``document``'s keys) whose signature verifies."""
        keys = {k.key_id: k.key() for k in document.keys}
        return {s.key_id for s in self.signatures
                if s.key_id in among and s.key_id in keys and _valid(keys[s.key_id], s.signature, self.signed.encode())}


def sign_trust(document: TrustDocument, root_keys: Iterable[Ed25519PrivateKey]) -> SignedTrust:
    text = document.canonical().decode()
    signatures = [KeySignature(key_id=kid, signature=sig) for kid, sig in
                  (sign_detached(text.encode(), k) for k in root_keys)]
    return SignedTrust(signed=text, signatures=signatures)


def load_signed(payload: bytes | str) -> SignedTrust:
    try:
        return decode(SignedTrust, payload, MAX_TRUST_BYTES + 4096)
    except PayloadError as exc:
        raise TrustUpdateError(f"not a signed trust document: {exc}") from exc


def verify_initial(signed: SignedTrust) -> TrustDocument:
    """A provisioned document (the device trusts it as installed): signed by a root key it lists."""
    document = signed.document()
    if not signed.signers(document, document.roots()):
        raise TrustUpdateError(f"trust document version {document.version} carries no valid signature by one "
                               f"of its root keys ({', '.join(sorted(document.roots()))})")
    return document


def verify_update(current: TrustDocument, signed: SignedTrust) -> TrustDocument:
    """The document that replaces ``current``: newer, signed by a current root key, and, when the root
    keys change, by one of the new ones too (so a typo cannot lock the device out)."""
    try:
        document = signed.document()
    except ContractError as exc:
        raise TrustUpdateError(str(exc)) from exc
    if document.version <= current.version:
        raise TrustUpdateError(f"trust document version {document.version} is not newer than the version "
                               f"{current.version} this device holds: refused (a replay or a stale copy)")
    current_keys = {k.key_id: k for k in current.keys}
    old_roots = current.roots()
    signed_by = {s.key_id for s in signed.signatures}
    # verify the current roots' signatures with the *current* public keys, never the new document's
    good = {sig.key_id for sig in signed.signatures if sig.key_id in old_roots
            and _valid(current_keys[sig.key_id].key(), sig.signature, signed.signed.encode())}
    if not good:
        other = sorted(signed_by - old_roots)
        raise TrustUpdateError(
            f"trust document version {document.version} is not signed by a root key this device trusts "
            f"({', '.join(sorted(old_roots))})" + (f"; signed by {', '.join(other)} instead" if other else ""))
    if document.roots() != old_roots and not signed.signers(document, document.roots() - old_roots or
                                                           document.roots()):
        raise TrustUpdateError(f"trust document version {document.version} changes the root keys but is not "
                               "signed by a new root key too")
    return document


def _valid(public: Ed25519PublicKey, signature: str, data: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError):  # ValueError: not base64 (binascii.Error), or not ASCII at all
        return False
    return True


def next_document(current: TrustDocument, add: Iterable[TrustedKey] = (), revoke: Iterable[str] = (),
                  issued_at: datetime | None = None) -> TrustDocument:
    """The document after ``current`` (version + 1): ``add`` trusted, ``revoke`` removed and revoked."""
    gone = set(revoke)
    unknown = gone - {k.key_id for k in current.keys} - set(current.revoked)
    if unknown:
        raise TrustUpdateError(f"cannot revoke {', '.join(sorted(unknown))}: not in trust document version "
                               f"{current.version}")
    keys = [k for k in current.keys if k.key_id not in gone] + list(add)
    try:
        return TrustDocument(version=current.version + 1, issued_at=issued_at or utc_now(), keys=keys,
                             revoked=sorted(set(current.revoked) | gone))
    except ValidationError as exc:  # too many keys in a role, no root left, ...
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors(include_url=False))
        raise TrustUpdateError(f"the next trust document would be invalid: {problems}") from exc
