"""``coldchain audit``: the audit log, newest first: every write by an operator (CLI or API
token) or a scheduled job (retention), with its result."""

from __future__ import annotations

from typing import Annotated

import typer

from coldchain.cloud_views import audit_table, shown
from coldchain.sources import Db, Token, Url, connected

app = typer.Typer(help="Who changed what, when, and how it ended.", invoke_without_command=True)


@app.callback()
def audit(db: Db = None, url: Url = None, token: Token = None,
          action: Annotated[str | None, typer.Option(help="Only this action, e.g. rollout.pause or retention.")]
          = None,
          offset: Annotated[int, typer.Option(min=0, help="Entries to skip.")] = 0,
          limit: Annotated[int, typer.Option(min=1, max=500, help="Entries to show.")] = 50) -> None:
    """The audit log, newest first."""
    from cloud.queries import Paging
    from coldchain.console import console

    with connected(db, url, token) as source:
        page = source.reads.audit(Paging(offset=offset, limit=limit), action)
    console.print(audit_table(page.items, f"Audit log: {shown(page, 'entries')}"))
