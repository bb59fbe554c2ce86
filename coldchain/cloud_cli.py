"""``coldchain cloud``: run the cloud (ingestion, publisher, rollout controller, HTTP API), add
bundles to its catalogue, read dead letters and alerts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from coldchain.cloud_views import (
    DEFAULT_BROKER,
    DEFAULT_DB,
    Broker,
    Db,
    Protocol,
    alerts_table,
    bundles_table,
    dead_letters_table,
    shown,
)
from coldchain.console import console, err_console, fail, user_errors
from coldchain.sources import Db as Target
from coldchain.sources import Token, Url, connected

if TYPE_CHECKING:
    from cloud.queries.models import BundleView
    from coldchain.remote import Api
    from contract.signing import TrustStore

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
    config: Annotated[Path | None, typer.Option("--config", envvar="COLDCHAIN_CLOUD_CONFIG", help="The cloud's "
                                                "configuration (YAML): alert webhooks, bundle uploads, retention, "
                                                "inventory per group; docs/cloud.md.")] = None,
) -> None:
    """Ingest telemetry/events/state, answer chunk repairs, drive rollouts; optionally the HTTP API
    (tokens from `coldchain token create`; 127.0.0.1 unless --host)."""
    import time

    from cloud.config import load_config
    from cloud.errors import CloudError
    from cloud.service import Cloud
    from contract.signing import load_private_key
    from transport.config import BrokerConfig

    with user_errors(CloudError, ValueError):
        version: Literal["5", "3.1.1"] = "5" if protocol == "5" else "3.1.1"
        if fleet is not None:
            from cloud.pki import FleetAuthority

            broker_config = FleetAuthority(fleet).cloud_login(broker, version)
        else:
            broker_config = BrokerConfig(url=broker, protocol=version)
        cloud = Cloud(db, broker_config, load_private_key(key), client_id, share_group, bytes_per_s,
                      notify=lambda m: console.print(f"[cyan]{m}"), config=load_config(config))
        if api_port is not None:
            _serve_api(cloud, api_port, api_host)
        console.print(f"cloud on {broker} with store {db}; Ctrl-C stops")
        try:
            cloud.run(until=None if seconds is None else time.monotonic() + seconds)
        except KeyboardInterrupt:
            cloud.stop_event.set()


def _serve_api(cloud: object, port: int, host: str = "127.0.0.1") -> None:
    """The HTTP API beside the cloud, supervised by it (restarted if it fails)."""
    cloud.serve_api(port, os.environ.get("COLDCHAIN_API_TOKEN") or None, host)  # type: ignore[attr-defined]
    console.print(f"HTTP API on http://{host}:{port}: every route but /health and /ready (and /metrics if "
                  "configured metrics.public) needs "
                  "'Authorization: Bearer TOKEN' of the route's scope (`coldchain token create NAME --scope "
                  "read|operate|admin`; COLDCHAIN_API_TOKEN, if set, is an admin token); docs at /docs")


Offset = Annotated[int, typer.Option(min=0, help="Rows to skip (paging).")]


@app.command("add-bundle")
def add_bundle(tarball: Annotated[Path, typer.Argument(help="A signed bundle (.tar.gz).")],
               trusted_key: Annotated[list[Path], typer.Option(
                   help="Public key(s) the bundle must verify against (with --db; remotely the cloud verifies "
                        "against its bundles.trusted_keys, and these are checked here first).")] = [],  # noqa: B006
               db: Target = None, url: Url = None, token: Token = None) -> None:
    """Verify a bundle and add it to the catalogue rollouts deploy from (remotely: upload it, an
    operate token; the cloud verifies it)."""
    from contract.signing import TrustStore

    with connected(db, url, token, OSError) as source:
        trust = TrustStore.from_paths(trusted_key) if trusted_key else None
        if source.api is None:
            if trust is None:
                raise fail("give --trusted-key: the bundle is verified against it before it enters the catalogue", 2)
            b = source.operations("cloud add-bundle").add_bundle(tarball, trust)
        else:
            if trust is not None:
                _verify(tarball, trust)
            b = _upload(source.api, tarball)
    console.print(f"bundle {b.sha256} ({b.model} v{b.version} #{b.sequence}, {b.target}, "
                  f"{b.size:,} bytes) is in the catalogue")


def _verify(tarball: Path, trust: TrustStore) -> None:
    """The whole check `bundle verify` makes, before a byte is uploaded."""
    import tempfile

    from contract.bundle import unpack, verify_dir

    with tempfile.TemporaryDirectory() as scratch:
        verify_dir(unpack(tarball, Path(scratch), trust), trust)


def _upload(api: Api, tarball: Path) -> BundleView:
    """Stream the tarball to the cloud with a progress bar on a terminal (for 1 MiB and more)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    size = tarball.stat().st_size if tarball.is_file() else 0
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True, disable=size < 1024 * 1024) as bar:
        task = bar.add_task(f"uploading {tarball.name}", total=size)

        def sent(n: int) -> None:
            bar.advance(task, n)
            if bar.tasks[0].completed >= size:
                bar.update(task, description="the cloud verifies it")

        return api.upload(tarball, sent)


@app.command()
def bundles(db: Target = None, url: Url = None, token: Token = None, offset: Offset = 0,
            limit: Annotated[int, typer.Option(min=1, max=500)] = 100) -> None:
    """The bundle catalogue."""
    from cloud.queries import Paging

    with connected(db, url, token) as source:
        page = source.reads.bundles(Paging(offset=offset, limit=limit))
    console.print(bundles_table(page.items, f"Bundles: {shown(page, 'bundles')}"))


@app.command("dead-letters")
def dead_letters(db: Target = None, url: Url = None, token: Token = None, offset: Offset = 0,
                 limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """Payloads ingestion refused, with the reason."""
    from cloud.queries import Paging

    with connected(db, url, token) as source:
        page = source.reads.dead_letters(Paging(offset=offset, limit=limit))
    console.print(dead_letters_table(page.items, f"Dead letters: {shown(page, 'dead letters')}"))


@app.command()
def alerts(db: Target = None, url: Url = None, token: Token = None, offset: Offset = 0,
           limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """Alerts raised by gates and monitoring."""
    from cloud.queries import Paging

    with connected(db, url, token) as source:
        page = source.reads.alerts(Paging(offset=offset, limit=limit))
    console.print(alerts_table(page.items, f"Alerts: {shown(page, 'alerts')}"))
