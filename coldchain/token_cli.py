"""``coldchain token``: API tokens with a scope (read, operate, admin), stored hashed in the
cloud's store; each change is recorded in the audit log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from coldchain.cloud_views import DEFAULT_DB, Db, open_sessions
from coldchain.console import console, user_errors

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="The token's name (who or what uses it), e.g. grafana or alice.")]


@app.command()
def create(name: Name, scope: Annotated[str, typer.Option(help="read (every GET), operate (rollouts and bundles "
                                                                "too) or admin (everything).")] = "read",
           db: Db = DEFAULT_DB) -> None:
    """Create a token and print it once: only its sha256 is kept."""
    from cloud.audit import cli_actor
    from cloud.errors import CloudError
    from cloud.tokens import create as make

    with user_errors(CloudError):
        token = make(open_sessions(db), name, scope, cli_actor())
    console.print(f"token {name!r} (scope {scope}); it is shown only now:", highlight=False)
    print(token)  # plain, for copying or piping


@app.command("list")
def list_(db: Db = DEFAULT_DB) -> None:
    """Every token: name, scope, who created it, when it was last used, revoked or not."""
    from cloud.tokens import listed

    table = Table(title="API tokens")
    for column in ("name", "scope", "created", "by", "last used", "revoked"):
        table.add_column(column)
    for t in listed(open_sessions(db)):
        table.add_row(t.name, t.scope, f"{t.created_at:%Y-%m-%d %H:%M}", t.created_by,
                      "-" if t.last_used_at is None else f"{t.last_used_at:%Y-%m-%d %H:%M}",
                      "-" if t.revoked_at is None else f"[red]{t.revoked_at:%Y-%m-%d %H:%M}[/]")
    console.print(table)


@app.command()
def revoke(name: Name, db: Db = DEFAULT_DB) -> None:
    """Revoke a token: the API refuses it (401) from its next request on."""
    from cloud.audit import cli_actor
    from cloud.errors import CloudError
    from cloud.tokens import revoke as remove

    with user_errors(CloudError):
        remove(open_sessions(db), name, cli_actor())
    console.print(f"token {name!r} is revoked")
