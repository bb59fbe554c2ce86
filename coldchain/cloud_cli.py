"""``coldchain cloud``: run the cloud (ingestion, publisher, rollout controller, HTTP API), add
bundles to its catalogue, read dead letters and alerts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from coldchain.cloud_views import DEFAULT_BROKER, DEFAULT_DB, Broker, Db, Protocol, alerts_table
from coldchain.console import console, user_errors

app = typer.Typer(help="Run the cloud and manage its bundle catalogue.", no_args_is_help=True)


@app.command()
def serve(
    key: Annotated[Path, typer.Option(help="Operator private key (.key): signs rollback commands.")],
    db: Db = DEFAULT_DB,
    broker: Broker = DEFAULT_BROKER,
    protocol: Protocol = "5",
    client_id: Annotated[str, typer.Option(help="MQTT client id (persistent session).")] = "coldchain-cloud",
    share_group: Annotated[str | None, typer.Option(help="Shared-subscription group (MQTT v5) when several "
                                                         "cloud processes ingest.")] = None,
    bytes_per_s: Annotated[float | None, typer.Option(min=1, help="Artifact egress limit.")] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", "--port", min=1, max=65535,
                                                 help="Serve the HTTP API on this port.")] = None,
    api_host: Annotated[str, typer.Option("--api-host", "--host", help="Address the HTTP API listens on (0.0.0.0: "
                                          "every interface; put TLS in front of it).")] = "127.0.0.1",
    seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long.")] = None,
    fleet: Annotated[Path | None, typer.Option(envvar="COLDCHAIN_FLEET", help="The fleet's key folder: connect with "
                                               "the cloud's identity (certificate over mqtts://, else password).")]
    = None,
) -> None:
    """Ingest telemetry/events/state, answer chunk repairs, drive rollouts; optionally the HTTP API
    (bearer token from COLDCHAIN_API_TOKEN, at least 16 characters; 127.0.0.1 unless --host)."""
    import time

    from cloud.errors import CloudError
    from cloud.service import Cloud
    from contract.signing import load_private_key
    from transport.config import BrokerConfig

    with user_errors(CloudError, ValueError):
        version: Literal["5", "3.1.1"] = "5" if protocol == "5" else "3.1.1"
        if fleet is not None:
            from cloud.pki import FleetAuthority

            config = FleetAuthority(fleet).cloud_login(broker, version)
        else:
            config = BrokerConfig(url=broker, protocol=version)
        cloud = Cloud(db, config, load_private_key(key), client_id, share_group, bytes_per_s,
                      notify=lambda m: console.print(f"[cyan]{m}"))
        if api_port is not None:
            _serve_api(cloud, api_port, api_host)
        console.print(f"cloud on {broker} with store {db}; Ctrl-C stops")
        try:
            cloud.run(until=None if seconds is None else time.monotonic() + seconds)
        except KeyboardInterrupt:
            cloud.stop_event.set()


def _serve_api(cloud: object, port: int, host: str = "127.0.0.1") -> None:
    """The HTTP API beside the cloud, supervised by it (restarted if it fails)."""
    cloud.serve_api(port, os.environ.get("COLDCHAIN_API_TOKEN", ""), host)  # type: ignore[attr-defined]
    console.print(f"HTTP API on http://{host}:{port}: every route but /health, /ready and /metrics needs "
                  "'Authorization: Bearer $COLDCHAIN_API_TOKEN' (docs at /docs)")


@app.command("add-bundle")
def add_bundle(tarball: Annotated[Path, typer.Argument(help="A signed bundle (.tar.gz).")],
               trusted_key: Annotated[list[Path], typer.Option(help="Public key(s) the bundle must verify against.")],
               db: Db = DEFAULT_DB) -> None:
    """Verify a bundle and add it to the catalogue rollouts deploy from."""
    from cloud.errors import CloudError
    from cloud.fleet import add_bundle as add
    from cloud.store import open_store
    from contract.signing import TrustStore

    with user_errors(CloudError), open_store(db).begin() as session:
        row = add(session, tarball, TrustStore.from_paths(trusted_key))
        console.print(f"bundle {row.sha256} ({row.model_name} v{row.model_version} #{row.sequence}, {row.target}, "
                      f"{row.size:,} bytes) is in the catalogue")


@app.command()
def bundles(db: Db = DEFAULT_DB) -> None:
    """The bundle catalogue."""
    from sqlalchemy import select

    from cloud.store import BundleRow, open_store

    with open_store(db)() as session:
        table = Table(title="Bundles")
        for column in ("sha256", "model", "version", "sequence", "target", "bytes"):
            table.add_column(column)
        for b in session.scalars(select(BundleRow).order_by(BundleRow.added_at)).all():
            table.add_row(b.sha256[:16], b.model_name, b.model_version, str(b.sequence), b.target, f"{b.size:,}")
        console.print(table)


@app.command("dead-letters")
def dead_letters(db: Db = DEFAULT_DB, limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """Payloads ingestion refused, with the reason."""
    from sqlalchemy import select

    from cloud.store import DeadLetter, open_store

    with open_store(db)() as session:
        table = Table(title="Dead letters")
        for column in ("received", "topic", "bytes", "reason"):
            table.add_column(column)
        for d in session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)).all():
            table.add_row(f"{d.received_at:%H:%M:%S}", d.topic, str(len(d.payload)), d.reason[:140])
        console.print(table)


@app.command()
def alerts(db: Db = DEFAULT_DB, limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """Alerts raised by gates and monitoring."""
    from sqlalchemy import select

    from cloud.store import Alert, open_store

    with open_store(db)() as session:
        console.print(alerts_table(session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit)).all()))
