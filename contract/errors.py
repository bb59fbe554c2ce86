"""Exceptions of the wire contract.

ContractError                 anything the contract refuses
├── TopicError                a topic that is not ours, or an id that cannot be in a topic
├── PayloadError              a payload that does not validate (bad JSON, wrong
│                             schema_version, missing or oversized field); ``problems``
│                             lists each field and what is wrong with it
├── SignatureError            a manifest whose signature does not verify
│   └── UntrustedKeyError     signed by a key that is not in the trust store
│       ├── WrongRoleError    signed by a trusted key, but one trusted in another role
│       ├── RevokedKeyError   signed by a key a root-signed trust document revoked
│       └── ExpiredKeyError   signed by a key past its ``not_after``
├── TrustUpdateError          a trust document that cannot replace the current one
├── KeyFileError              a key file that is missing, unreadable or not an Ed25519 key
└── BundleError               a bundle directory or tarball that is malformed, incomplete or tampered
"""

from __future__ import annotations


class ContractError(Exception):
    """Base of every error raised by ``contract``."""


class TopicError(ContractError, ValueError):
    """A topic or topic component is invalid."""


class PayloadError(ContractError, ValueError):
    """A payload does not match its message model."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        self.problems = problems
        detail = "".join(f"\n  - {p}" for p in problems)
        super().__init__(message + detail)


class SignatureError(ContractError):
    """The signature over a manifest does not verify."""


class UntrustedKeyError(SignatureError):
    """The manifest is signed by a key the verifier does not trust."""


class WrongRoleError(UntrustedKeyError):
    """Signed by a key the verifier trusts, but in another role (an operator key on a bundle)."""


class RevokedKeyError(UntrustedKeyError):
    """Signed by a key that a root-signed trust document revoked."""


class ExpiredKeyError(UntrustedKeyError):
    """Signed by a key whose ``not_after`` has passed by the verifier's trusted time."""


class TrustUpdateError(ContractError):
    """A signed trust document that is malformed, not signed by a current root key, or not newer."""


class KeyFileError(ContractError, OSError):
    """A key file cannot be read, written or parsed."""


class BundleError(ContractError):
    """A bundle directory or tarball is malformed, incomplete or tampered with."""
