"""``coldchain monitor``: latency, errors, inventory and drift per device, group or bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from coldchain.cloud_views import alerts_table, monitor_table, operations
from coldchain.console import console
from coldchain.sources import Db, Source, Token, Url, connected

if TYPE_CHECKING:
    from cloud.queries.models import MonitorView

app = typer.Typer(help="Fleet health and drift from telemetry.", invoke_without_command=True)


@app.callback()
def monitor(by: Annotated[str, typer.Option(help="device, group or bundle.")] = "group",
            minutes: Annotated[float, typer.Option(min=0.1, help="Telemetry of the last N minutes.")] = 60.0,
            plot: Annotated[Path | None, typer.Option(help="Also write latency and drift plots to this PNG.")] = None,
            export: Annotated[Path | None, typer.Option(help="Also write the table as CSV here; device ids become "
                                                        "keyed pseudonyms (docs/cloud.md).")] = None,
            raw_ids: Annotated[bool, typer.Option("--raw-ids", help="Keep raw device ids in the export.")] = False,
            config: Annotated[Path | None, typer.Option("--config", envvar="COLDCHAIN_CLOUD_CONFIG",
                                                        help="The cloud's configuration (the pseudonym key; "
                                                             "with --db only: remotely the cloud's own).")]
            = None,
            db: Db = None, url: Url = None, token: Token = None) -> None:
    """A table per scope; alerts below it."""
    if by not in ("device", "group", "bundle"):
        raise typer.BadParameter("--by is device, group or bundle")
    scope: Literal["device", "group", "bundle"] = by  # type: ignore[assignment]
    with connected(db, url, token, OSError) as source:
        rows = source.reads.telemetry(scope, minutes)
        console.print(monitor_table(rows, f"Telemetry per {by}, last {minutes:g} min"))
        alerts = source.reads.alerts().items[:10]
        if alerts:
            console.print(alerts_table(alerts))
        if plot is not None:
            write_plot(rows, plot)
            console.print(f"plot written to {plot}")
        if export is not None:
            if source.db is None:
                _fetch_export(source, scope, minutes, export, raw_ids)
            else:
                _export(source.db, rows, export, raw_ids, config)
            console.print(f"CSV written to {export}" + (" (raw device ids)" if raw_ids else
                                                        " (device ids as keyed pseudonyms)"))


def _export(db: str, rows: list[MonitorView], path: Path, raw: bool, config: Path | None) -> None:
    from cloud.config import load_config
    from cloud.exports import pseudonym_key, to_csv

    operator = operations(db)
    settings = load_config(config).exports
    detail = {"by": rows[0].scope if rows else None, "ids": "raw" if raw else "pseudonyms", "path": str(path)}
    text = operator.audited("telemetry.export", str(path), detail, lambda: to_csv(
        rows, None if raw else pseudonym_key(operator.sessions, settings)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fetch_export(source: Source, by: Literal["device", "group", "bundle"], minutes: float, path: Path,
                  raw: bool) -> None:
    """The cloud's own export (``GET /telemetry/export``, audited there; raw ids need an admin token)."""
    from coldchain.remote import RemoteQueries

    text = RemoteQueries(source.remote()).export(by, minutes, raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_plot(rows: list[MonitorView], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [r.subject[:18] for r in rows]
    axes[0].bar(names, [r.latency_p95_ms or 0 for r in rows], color="#4477aa")
    axes[0].set_title("latency p95 (ms)")
    axes[1].bar(names, [r.error_rate * 100 for r in rows], color="#cc6677")
    axes[1].set_title("error rate (%)")
    axes[1].set_ylim(bottom=0)  # never a negative error rate
    axes[2].bar(names, [r.prediction_drift_js or 0 for r in rows], color="#ddaa33")
    axes[2].axhline(0.15, color="grey", linestyle="--", linewidth=1)
    axes[2].set_title("prediction drift vs reference (JS)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
