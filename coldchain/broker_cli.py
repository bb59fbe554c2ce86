"""``coldchain broker``: the embedded MQTT broker (amqtt, MQTT 3.1.1) on 127.0.0.1, and
``coldchain broker config mosquitto``: a Mosquitto configuration for the fleet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from coldchain.console import console, fail, user_errors

FLEET_HELP = "The fleet's key folder (CA, revocation list, passwords; made on first use)."
Fleet = Annotated[Path, typer.Option("--fleet", envvar="COLDCHAIN_FLEET", help=FLEET_HELP)]
DEFAULT_FLEET = Path("fleet-keys")

app = typer.Typer(help="Run the embedded MQTT broker on 127.0.0.1, or configure Mosquitto.",
                  invoke_without_command=True)
config_app = typer.Typer(help="Write a broker configuration for the fleet.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def broker(ctx: typer.Context,
           port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1.")] = 1883,
           seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long.")] = None,
           fleet: Annotated[Path | None, typer.Option(
               "--fleet", envvar="COLDCHAIN_FLEET", help="Key folder whose password file says who may connect "
               "(`coldchain fleet provision --broker mqtt://...`).")] = None,
           insecure: Annotated[bool, typer.Option(
               "--insecure", help="Anyone may connect and use any topic: a throwaway demo only.")] = False) -> None:
    """Serve MQTT on 127.0.0.1 until Ctrl-C: clients log in with the fleet's passwords and the
    contract's ACL applies (or --insecure). At scale use Mosquitto (`coldchain broker config mosquitto`)."""
    if ctx.invoked_subcommand is not None:
        return
    if fleet is None and not insecure:
        raise fail("give --fleet DIR (passwords from `coldchain fleet provision`) or --insecure (anyone may "
                   "connect, publish commands and read everything)")
    from cloud.broker import EmbeddedBroker
    from cloud.broker_auth import Identities
    from cloud.errors import CloudError
    from cloud.pki import FleetAuthority

    with user_errors(CloudError):
        identities = None
        if fleet is not None:
            authority = FleetAuthority(fleet)
            authority.cloud_password()
            identities = Identities(authority.passwd_file)
        embedded = EmbeddedBroker(port=port, identities=identities, allow_anonymous=insecure).start()
    try:
        access = "ANONYMOUS, no ACL" if insecure else f"passwords from {fleet}, the contract's ACL"
        console.print(f"broker listening on [bold]{embedded.url}[/] (MQTT 3.1.1: clients use --protocol 3.1.1; "
                      f"{access})")
        until = None if seconds is None else time.monotonic() + seconds
        while until is None or time.monotonic() < until:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping the broker")
    finally:
        embedded.stop()


@config_app.command("mosquitto")
def mosquitto(out: Annotated[Path, typer.Option(help="Folder for mosquitto.conf and acl.")] = Path("mosquitto"),
              fleet: Fleet = DEFAULT_FLEET,
              port: Annotated[int | None, typer.Option(min=1, max=65535, help="Listener port (8883 with TLS, "
                                                       "1883 without).")] = None,
              bind: Annotated[str | None, typer.Option(help="Listen on this address only.")] = None,
              host: Annotated[list[str] | None, typer.Option(help="Name or address clients reach the broker "
                                                             "by (server certificate; repeatable).")] = None,
              tls: Annotated[bool, typer.Option("--tls/--no-tls", help="Client certificates (default) or the "
                                                "fleet's password file.")] = True,
              persistence_dir: Annotated[str, typer.Option(help="Mosquitto's persistence folder.")]
              = "/var/lib/mosquitto/") -> None:
    """Write OUT/mosquitto.conf and OUT/acl: a TLS listener requiring fleet client certificates (CN =
    MQTT identity), the CRL, the ACL generated from contract/topics.py, queue limits and persistence."""
    from cloud.broker import mosquitto_access, mosquitto_conf
    from cloud.errors import CloudError
    from cloud.pki import FleetAuthority

    with user_errors(CloudError, OSError):
        authority = FleetAuthority(fleet.resolve())
        access = mosquitto_access(authority, (out / "acl").resolve(), tls, tuple(host or ["localhost", "127.0.0.1"]))
        text = mosquitto_conf(port or (8883 if tls else 1883), persistence_dir, access, bind)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mosquitto.conf").write_text(text)
    console.print(f"wrote {out / 'mosquitto.conf'} and {out / 'acl'}; start with `mosquitto -c "
                  f"{out / 'mosquitto.conf'}` (the cloud connects with `coldchain cloud serve --fleet {fleet}`)")
