"""Exceptions of the CLI shell, each with the exit code the command ends with
(``coldchain.console.user_errors`` prints the message, never a traceback).

CliError                anything the CLI refuses                                   exit 1
├── TargetError         no store and no cloud given, both, an unusable login file,
│                       a plain-http URL to another host, a command the API lacks  exit 2
└── RemoteError         the cloud's API refused or failed (404, 409, 422, 5xx)     exit 1
    ├── AccessError     the token is unknown or revoked (401), or its scope is
    │                   too low for the route (403)                                exit 3
    └── UnreachableError nothing answers at the URL (refused, DNS, TLS, timeout)   exit 4
"""

from __future__ import annotations


class CliError(Exception):
    """Base of the CLI's own errors."""

    exit_code = 1


class TargetError(CliError):
    """Where to read or write is not given, ambiguous, or unsafe."""

    exit_code = 2


class RemoteError(CliError):
    """The cloud's API answered with an error (or with something that is not its API)."""


class AccessError(RemoteError):
    """The cloud refused the token (401) or its scope (403)."""

    exit_code = 3


class UnreachableError(RemoteError):
    """The cloud's API could not be reached at all."""

    exit_code = 4
