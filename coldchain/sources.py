"""Where a command reads and writes: the store itself (``--db``, the query layer and the audited
operations) or the cloud's HTTP API (``--url``/``--token``, ``COLDCHAIN_URL``/``COLDCHAIN_TOKEN``,
or the login ``coldchain login`` stored). Both sides answer with the same pydantic views, so each
command has one path that renders them, whichever side fed it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from coldchain.console import user_errors
from coldchain.errors import TargetError

if TYPE_CHECKING:
    from cloud.operations import Operations
    from coldchain.remote import Api, Reads, Writes

Db = Annotated[str | None, typer.Option("--db", envvar="COLDCHAIN_DB", show_default=False, help=(
    "Read and write the store itself: sqlite:///PATH or postgresql://user:pw@host/db (else the cloud's API)."))]
Url = Annotated[str | None, typer.Option("--url", envvar="COLDCHAIN_URL", show_default=False, help=(
    "The cloud's API, e.g. https://cloud.example.com (default: the one `coldchain login` stored)."))]
Token = Annotated[str | None, typer.Option("--token", envvar="COLDCHAIN_TOKEN", show_default=False, help=(
    "An API token for --url (default: the stored login's); prefer `coldchain login` or the environment."))]


@dataclass
class Source:
    """One side: ``reads`` and ``writes`` over the store (``db`` set) or over the API (``api`` set)."""

    reads: Reads
    writes: Writes
    db: str | None = None  # the store, when local
    api: Api | None = None  # the cloud's API, when remote

    def operations(self, what: str) -> Operations:
        """The store's own operations for ``what``, a write the API has no route for."""
        from cloud.operations import Operations

        if not isinstance(self.writes, Operations):
            raise TargetError(f"{what} writes the store itself (the cloud's API has no route for it): run it with "
                              "--db on the cloud's host")
        return self.writes

    def remote(self) -> Api:
        if self.api is None:
            raise TargetError("this needs the cloud's API (--url or `coldchain login`), not --db")
        return self.api


def local(db: str) -> Source:
    from cloud.audit import cli_actor
    from cloud.operations import Operations
    from cloud.queries import Queries
    from coldchain.cloud_views import open_sessions

    sessions = open_sessions(db)
    return Source(Queries(sessions), Operations(sessions, cli_actor()), db=db)


def remote(url: str | None, token: str | None) -> Source:
    """The API at ``url`` (else the stored login's) with ``token`` (else the stored login's, for its own URL only)."""
    from coldchain import login
    from coldchain.remote import Api, RemoteOperations, RemoteQueries

    stored = login.load() if url is None or token is None else None  # --url and --token need no file
    if url is not None:
        address = login.normalised(url)
    elif stored is not None:
        address = stored.url
    else:
        raise TargetError("no cloud given: read the store itself with --db sqlite:///PATH (or postgresql://...), or "
                          "use the cloud's API: `coldchain login URL` once (or --url and --token, "
                          "COLDCHAIN_URL and COLDCHAIN_TOKEN)")
    own = stored if stored is not None and stored.url == address else None  # its token goes to its URL only
    token = token or (own.token if own is not None else None)
    if not token:
        raise TargetError(f"no token for {address}: `coldchain login {address}`, or --token / COLDCHAIN_TOKEN")
    login.check_transport(address, (own is not None and own.insecure) or os.environ.get(login.INSECURE_ENV) == "1")
    api = Api(address, token)
    return Source(RemoteQueries(api), RemoteOperations(api), api=api)


@contextmanager
def connected(db: str | None, url: str | None, token: str | None, *errors: type[Exception]) -> Iterator[Source]:
    """The source the options name (``--db`` local, else remote), closed afterwards; the project's
    errors (and ``errors``) become one-line messages with their exit codes."""
    from pydantic import ValidationError

    from cloud.errors import CloudError

    with user_errors(CloudError, ValidationError, *errors):
        if db is not None and url is not None:
            raise TargetError("give --db (the store itself; COLDCHAIN_DB) or --url (the cloud's API; COLDCHAIN_URL), "
                              "not both")
        source = local(db) if db is not None else remote(url, token)
        try:
            yield source
        finally:
            if source.api is not None:
                source.api.close()
