"""``coldchain login URL`` and ``coldchain logout``: the cloud's API and a token for the fleet,
rollout, monitor, bundle and audit commands, stored 0600 (``coldchain.login``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from coldchain.console import console, user_errors
from coldchain.sources import Token, Url

login_app = typer.Typer(help="Store the cloud API's URL and a token (checked first) for the remote commands.")
logout_app = typer.Typer(help="Forget the stored login.")
whoami_app = typer.Typer(help="The token the remote commands use: its name and scope.")


@login_app.command()
def login(url: Annotated[str, typer.Argument(help="The cloud's API, e.g. https://cloud.example.com.")],
          token: Annotated[str | None, typer.Option(help="An API token (`coldchain token create NAME` on the cloud); "
                                                    "asked for, unechoed, when not given.")] = None,
          insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain http to a host other than this "
                                                 "machine (the token crosses the network readable).")] = False,
          ) -> None:
    """Check the token against the API, then store URL and token in the user's config folder (0600);
    fleet, rollout, monitor, cloud bundles/alerts/dead-letters/add-bundle and audit use it when no
    --db is given."""
    from coldchain import login as stored
    from coldchain.remote import Api, RemoteQueries

    with user_errors():
        address = stored.normalised(url)
        stored.check_transport(address, insecure)  # before the token is typed or sent
        secret = token or typer.prompt("API token", hide_input=True).strip()
        with Api(address, secret) as api:
            me, fleet = RemoteQueries(api).whoami(), RemoteQueries(api).devices()
        where = stored.save(stored.Login(address, secret, insecure))
    console.print(f"logged in to {address} as token {me.name!r} (scope {me.scope}; {fleet.total} devices); "
                  f"the token is in {where} (mode 0600)", highlight=False)


@logout_app.command()
def logout() -> None:
    """Forget the stored URL and token (the token itself stays valid until `coldchain token revoke`)."""
    from coldchain import login as stored

    with user_errors():
        where = stored.remove()
    console.print("not logged in" if where is None else f"removed {where}; the token stays valid on the cloud "
                  "until revoked there (`coldchain token revoke NAME`)", highlight=False)


@whoami_app.command()
def whoami(url: Url = None, token: Token = None) -> None:
    """The cloud's API in use and its token's name, scope, creation and last use (never the token)."""
    from coldchain.remote import RemoteQueries
    from coldchain.sources import connected

    with connected(None, url, token) as source:
        api = source.remote()
        me = RemoteQueries(api).whoami()

    def when(moment: datetime | None) -> str:
        return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"

    console.print(f"{api.url}: token {me.name!r}, scope {me.scope}\ncreated {when(me.created_at)}"
                  f"{f' by {me.created_by}' if me.created_by else ' (the bootstrap token)'}\n"
                  f"last used {when(me.last_used_at)}", highlight=False)
