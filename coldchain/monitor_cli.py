"""``coldchain monitor``: latency, errors, inventory and drift per device, group or bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer

from coldchain.cloud_views import DEFAULT_DB, Db, alerts_table, monitor_table
from coldchain.console import console, user_errors

app = typer.Typer(help="Fleet health and drift from telemetry.", invoke_without_command=True)


@app.callback()
def monitor(by: Annotated[str, typer.Option(help="device, group or bundle.")] = "group",
            minutes: Annotated[float, typer.Option(min=0.1, help="Telemetry of the last N minutes.")] = 60.0,
            plot: Annotated[Path | None, typer.Option(help="Also write latency and drift plots to this PNG.")] = None,
            db: Db = DEFAULT_DB) -> None:
    """A table per scope; alerts below it."""
    from sqlalchemy import select

    from cloud.errors import CloudError
    from cloud.monitor import monitor as rows_for
    from cloud.store import Alert, open_store

    if by not in ("device", "group", "bundle"):
        raise typer.BadParameter("--by is device, group or bundle")
    scope: Literal["device", "group", "bundle"] = by  # type: ignore[assignment]
    with user_errors(CloudError), open_store(db)() as session:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        rows = rows_for(session, scope, since)
        console.print(monitor_table(rows, f"Telemetry per {by}, last {minutes:g} min"))
        alerts = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(10)).all()
        if alerts:
            console.print(alerts_table(alerts))
        if plot is not None:
            write_plot(rows, plot)
            console.print(f"plot written to {plot}")


def write_plot(rows: list, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [r.subject[:18] for r in rows]
    axes[0].bar(names, [r.summary.latency_p95 or 0 for r in rows], color="#4477aa")
    axes[0].set_title("latency p95 (ms)")
    axes[1].bar(names, [r.summary.error_rate * 100 for r in rows], color="#cc6677")
    axes[1].set_title("error rate (%)")
    axes[2].bar(names, [r.reference_drift or 0 for r in rows], color="#ddaa33")
    axes[2].axhline(0.15, color="grey", linestyle="--", linewidth=1)
    axes[2].set_title("prediction drift vs reference (JS)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
