"""``coldchain fleet``: the devices the cloud knows (from their retained state), their groups and tags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from coldchain.broker_cli import DEFAULT_FLEET, Fleet
from coldchain.cloud_views import DEFAULT_DB, Db, fleet_table, open_sessions, operations, shown
from coldchain.console import console, fail, user_errors
from coldchain.sources import Db as Store
from coldchain.sources import Token, Url, connected

app = typer.Typer(help="List, show, tag, provision and revoke devices.", no_args_is_help=True)


Offset = Annotated[int, typer.Option(min=0, help="Rows to skip (paging).")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Rows to show at most.")]


@app.command("list")
def list_(db: Store = None, url: Url = None, token: Token = None,
          group: Annotated[str | None, typer.Option(help="Only devices of this group.")] = None,
          board: Annotated[str | None, typer.Option(help="Only devices of this board.")] = None,
          bundle: Annotated[str | None, typer.Option(help="Only devices running this bundle (sha256 prefix).")]
          = None,
          online: Annotated[bool, typer.Option("--online", help="Only devices online now.")] = False,
          faulty: Annotated[bool, typer.Option("--faulty", help="Only devices whose last state reports a fault "
                                               "(camera gone, spool full).")] = False,
          text: Annotated[str | None, typer.Option(help="Only devices whose id, board or agent version "
                                                   "contains this.")] = None,
          offset: Offset = 0, limit: Limit = 100) -> None:
    """Devices, online ones first, filtered and paged by the store; an agent too old for the cloud's
    commands says "needs a new agent"; "faults" are those its last state reports; "last seen" moves
    with any message from the device."""
    from cloud.queries import DeviceFilter

    with connected(db, url, token) as source:
        page = source.reads.devices(DeviceFilter(group=group, board=board, bundle=bundle,
                                                     online=True if online else None, text=text,
                                                     faulty=True if faulty else None,
                                                     offset=offset, limit=limit))
        console.print(fleet_table(page.items, f"Fleet: {shown(page, 'devices')}"))


@app.command()
def show(device: Annotated[str, typer.Argument(help="Device id.")], db: Store = None, url: Url = None,
         token: Token = None) -> None:
    """One device: what it reports, what operators assigned, its recent jobs."""
    with connected(db, url, token) as source:
        detail = source.reads.device(device)
    console.print(fleet_table([detail.device]))
    if detail.device.needs_new_agent:
        console.print(f"{device} {detail.device.needs_new_agent}; rollouts skip it until then", style="bold red")
    for fault in detail.device.faults:  # what its last state reports wrong now
        console.print(escape(f"fault: {fault.code} since {fault.since:%Y-%m-%d %H:%M:%S %Z}: {fault.message}"),
                      style="bold red")
    dropped = detail.dropped_windows
    console.print(f"telemetry windows dropped on the device unsent (its spool was full): {dropped}",
                  style="bold red" if dropped else None)
    table = Table(title=f"Recent events of {device}")
    for column in ("time", "type", "job", "state", "reason"):
        table.add_column(column)
    for e in detail.events:
        table.add_row(f"{e.ts:%H:%M:%S}", e.type, e.job_id or "-", e.state or "-", (e.reason or "")[:100])
    console.print(table)


def _pairs(values: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise fail(f"--set takes key=value, got {value!r}")
        out[key] = val
    return out


@app.command()
def tag(devices: Annotated[list[str], typer.Argument(help="Device ids.")],
        set_: Annotated[list[str], typer.Option("--set", help="Tag key=value (repeatable).")] = [],  # noqa: B006
        unset: Annotated[list[str], typer.Option(help="Tag key to remove (repeatable).")] = [],  # noqa: B006
        add_group: Annotated[list[str], typer.Option(help="Assign a group (repeatable).")] = [],  # noqa: B006
        remove_group: Annotated[list[str], typer.Option(help="Unassign a group (repeatable).")] = [],  # noqa: B006
        db: Store = None, url: Url = None, token: Token = None) -> None:
    """Set or remove tags and assign groups; rollouts select devices by both (an operate token remotely)."""
    from contract.errors import TopicError

    changes: dict[str, str | None] = {**_pairs(set_), **dict.fromkeys(unset)}
    with connected(db, url, token, TopicError) as source:
        changed = source.writes.tag(devices, changes, add_group, remove_group)
    console.print(fleet_table(changed))


@app.command()
def provision(device: Annotated[str, typer.Argument(help="Device id (its MQTT identity).")],
              group: Annotated[str, typer.Option(help="The device's group.")],
              board: Annotated[str, typer.Option(help="The device's board, e.g. rpi4.")],
              trusted_key: Annotated[list[Path], typer.Option(help="Public key the device trusts (bundle signer, "
                                                               "operator; repeatable).")],
              broker: Annotated[str, typer.Option(help="Broker URL the device connects to: mqtts:// gives it a "
                                                  "client certificate, mqtt:// a password.")]
              = "mqtts://localhost:8883",
              out: Annotated[Path | None, typer.Option(help="Folder for the device's files (default: "
                                                       "./provisioned/DEVICE).")] = None,
              tarball: Annotated[bool, typer.Option("--tarball", help="Also pack it as DEVICE.tar.gz.")] = False,
              install_dir: Annotated[Path, typer.Option(help="Where the factory puts the folder on the device "
                                                        "(paths in agent.yaml).")] = Path("/etc/coldchain"),
              fleet: Fleet = DEFAULT_FLEET, db: Db = DEFAULT_DB) -> None:
    """Create a device's identity (a client certificate from the fleet CA, or a password without TLS),
    its agent config and trust bundle in one folder for the factory; register it in the store."""
    from cloud.errors import CloudError
    from cloud.pki import FleetAuthority
    from cloud.provision import provision as make

    with user_errors(CloudError, OSError):
        done = operations(db).audited("device.provision", device, {"group": group, "board": board, "broker": broker},
                                      lambda: make(FleetAuthority(fleet), open_sessions(db), device, group, board,
                                                   broker, trusted_key, out or Path("provisioned") / device,
                                                   install_dir, tarball=tarball))
    what = "client certificate" if done.tls else "broker password"
    console.print(f"{device}: {what}, agent.yaml and trust bundle in {done.folder}"
                  + (f" (and {done.tarball})" if done.tarball else "") + f"; copy it to {install_dir} on the device")


@app.command()
def revoke(device: Annotated[str, typer.Argument(help="Device id.")],
           fleet: Fleet = DEFAULT_FLEET, db: Db = DEFAULT_DB) -> None:
    """Remove a device's broker access: its certificates go on the revocation list, its password is
    removed. Restart Mosquitto (it reads the CRL at start); the embedded broker follows at once."""
    from cloud.errors import CloudError
    from cloud.pki import FleetAuthority
    from cloud.provision import revoke as remove

    with user_errors(CloudError, OSError):
        said = operations(db).audited("device.revoke", device, {},
                                      lambda: remove(FleetAuthority(fleet), open_sessions(db), device))
    console.print(f"{device}: {said}")


@app.command()
def config(device: Annotated[str, typer.Argument(help="Device id.")],
           inference_interval_s: Annotated[float | None, typer.Option(min=0, max=3600,
                                                                      help="Seconds between inferences.")] = None,
           telemetry_window_s: Annotated[float | None, typer.Option(min=1, max=86400,
                                                                    help="Seconds per telemetry window.")] = None,
           db: Store = None, url: Url = None, token: Token = None) -> None:
    """Change a device's settings (a set_config command). Queued in the store (or through the API, with an
    operate token): the running cloud signs it with its operator key and sends it until the device answers
    (it takes effect at once)."""
    with connected(db, url, token, ValueError) as source:
        job = source.writes.set_config(device, inference_interval_s, telemetry_window_s)
    console.print(f"queued {job} for {device}: the cloud sends it signed; its answer shows in "
                  f"`coldchain fleet show {device}`")
