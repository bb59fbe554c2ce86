"""Tables the cloud commands and the demo print: fleet, rollouts, monitoring, alerts. Plus the
options of the commands that run on the cloud's host (``--db`` with a default, ``--broker``); the
commands that also work over the API take ``coldchain.sources``' options instead."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from contract.jobs import waits_for_evidence

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from cloud.operations import Operations
    from cloud.queries.models import (
        AlertView,
        AuditView,
        BundleView,
        DeadLetterView,
        DeviceView,
        MonitorView,
        Page,
        RollbackStepView,
        RolloutDetail,
        RolloutSummary,
    )

Db = Annotated[str, typer.Option("--db", envvar="COLDCHAIN_DB",
                                 help="Store URL: sqlite:///PATH or postgresql://user:pw@host/db.")]
Broker = Annotated[str, typer.Option("--broker", envvar="COLDCHAIN_BROKER", help="mqtt://host:port or mqtts://...")]
Protocol = Annotated[str, typer.Option(help="MQTT protocol: 5, or 3.1.1 for brokers without v5 (amqtt).")]
DEFAULT_DB = "sqlite:///coldchain.db"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def _utcnow() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _utcnow  # "N s ago" is counted from this (a test fixes it)


def open_sessions(db: str) -> sessionmaker[Session]:
    """The store behind ``--db`` (imported here, lazily, so ``coldchain --help`` stays light)."""
    from cloud.store import open_store

    return open_store(db)


def operations(db: str) -> Operations:
    """Writes to the store behind ``--db``, audited as ``cli:<user>``."""
    from cloud.audit import cli_actor
    from cloud.operations import Operations

    return Operations(open_sessions(db), cli_actor())


def shown(page: Page[Any], what: str) -> str:
    """A page's caption: which rows of how many."""
    if page.total <= len(page.items):
        return f"{page.total} {what}"
    return f"{what} {page.offset + 1}-{page.offset + len(page.items)} of {page.total} (--offset/--limit for more)"


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (clock() - when).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def agent_cell(d: DeviceView) -> str:
    """The agent's version and protocol; ``needs a new agent`` when the cloud cannot command it."""
    if d.protocol is None:
        return d.agent_version or "-"
    cell = f"{d.agent_version or '?'} (protocol {d.protocol})"
    return cell + (" [bold red]needs a new agent[/]" if d.needs_new_agent else "")


def fleet_table(devices: Sequence[DeviceView], title: str | None = None) -> Table:
    table = Table(title=title or f"Fleet ({len(devices)} devices)")
    for column in ("device", "online", "board", "agent", "groups", "tags", "active bundle", "job", "faults",
                   "last seen"):
        table.add_column(column)
    for d in devices:
        active = "-" if not d.active else f"{d.active['model_name']} #{d.active['sequence']}"
        faults = ",".join(f.code for f in d.faults)
        table.add_row(d.id, "[green]yes[/]" if d.online else "[red]no[/]", d.board or "-", agent_cell(d),
                      ",".join(d.groups) or "-", ",".join(f"{k}={v}" for k, v in d.tags.items()) or "-",
                      active, f"{d.job_state or '-'}", f"[bold red]{faults}[/]" if faults else "-", _age(d.last_seen))
    return table


STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "ROLLED_BACK": "yellow", "TIMED_OUT": "red",
               "RUNNING": "cyan", "ROLLING_BACK": "yellow", "ABORTED": "red", "PAUSED": "magenta",
               "SUPERSEDED": "dim"}


def _styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def rollouts_table(rollouts: Sequence[RolloutSummary]) -> Table:
    table = Table(title="Rollouts")
    for column in ("rollout", "bundle", "status", "wave", "reason", "created"):
        table.add_column(column)
    for r in rollouts:
        table.add_row(r.id, r.bundle[:12], _styled(r.status), str(r.wave), (r.reason or "")[:90],
                      _age(r.created_at))
    return table


def rollout_table(r: RolloutDetail) -> Table | Group:
    """A rollout wave by wave, and under it the devices' own reasons for failed jobs, grouped."""
    table = Table(title=f"Rollout {r.id}: {r.bundle_label} -> {_styled(r.status)}, wave {r.wave}/{r.waves}")
    for column in ("wave", "devices", "states", "gates"):
        table.add_column(column)
    for wave in r.wave_views:
        gate_text = ", ".join(("[green]" if g.passed else "[red]") + g.gate + (
            f" {g.value:.3g}" if g.value is not None else "") + "[/]" for g in wave.gates) or "-"
        table.add_row(str(wave.wave), str(wave.devices),
                      ", ".join(f"{_styled(k)} {v}" for k, v in wave.states.items()), gate_text)
    if r.reason:
        table.caption = r.reason
    reasons = r.failure_reasons
    lines = []
    if reasons:
        lines += ["The devices' reasons for their failed jobs:",
                  *(f"  {x['devices']} × {x['reason']}" for x in reasons[:10])]
    if len(reasons) > 10:
        lines.append(f"  ... and {len(reasons) - 10} other reasons")
    waiting = [d for d in r.devices if d.state == "READY" or waits_for_evidence(d.state, d.reason)]
    if waiting:  # healthy and waiting: the wave's timeout gives them ready_s / evidence_s instead
        lines += ["Devices waiting (not timed out by the wave):",
                  *(f"  {d.device} {d.state}: {d.reason or 'no reason given'}" for d in waiting[:10])]
    if len(waiting) > 10:
        lines.append(f"  ... and {len(waiting) - 10} more")
    return Group(table, Text("\n".join(lines))) if lines else table  # not wrapped to the table's width


def rollback_plan_table(rollout_id: str, plan: Sequence[RollbackStepView]) -> Table:
    """Which device goes to which bundle, from what each device reported (before anything is sent)."""
    table = Table(title=f"Rolling back {rollout_id}: the plan")
    for col in ("device", "action", "runs now", "goes to", "why"):
        table.add_column(col)
    style = {"roll back": "yellow", "impossible": "red", "cancel": "yellow", "nothing": "dim"}

    def ref(bundle: dict[str, object] | None) -> str:
        return "-" if not bundle else f"#{bundle.get('sequence')} {str(bundle.get('sha256', ''))[:10]}"

    for step in plan:
        table.add_row(step.device, f"[{style.get(step.action, 'white')}]{step.action}[/]", ref(step.current),
                      ref(step.to), step.why)
    return table


def monitor_table(rows: Sequence[MonitorView], title: str) -> Table:
    table = Table(title=title)
    for column in ("subject", "devices", "windows", "inferences", "error rate", "p50 ms", "p95 ms",
                   "drift vs reference (JS)", "drift vs previous (JS)", "input drift (PSI)", "inventory (latest)"):
        table.add_column(column, justify="right" if column not in ("subject", "inventory (latest)") else "left")

    def num(value: float | None, fmt: str = ".2f") -> str:
        return "-" if value is None else format(value, fmt)

    for row in rows:
        inventory = ", ".join(f"{k} {v}" for k, v in sorted(row.inventory.items())) or "-"
        table.add_row(row.subject, str(row.devices), str(row.windows), str(row.inferences), f"{row.error_rate:.1%}",
                      num(row.latency_p50_ms), num(row.latency_p95_ms), num(row.prediction_drift_js, ".3f"),
                      num(row.previous_drift_js, ".3f"), num(row.input_drift_psi, ".3f"), inventory)
    return table


def alerts_table(alerts: Sequence[AlertView], title: str | None = None) -> Table:
    table = Table(title=title or f"Alerts ({len(alerts)})")
    for column in ("when", "kind", "scope", "subject", "message"):
        table.add_column(column)
    for a in alerts:
        table.add_row(_age(a.created_at), a.kind, a.scope, a.subject, a.message[:160])
    return table


def bundles_table(bundles: Sequence[BundleView], title: str = "Bundles") -> Table:
    table = Table(title=title)
    for column in ("sha256", "model", "version", "sequence", "target", "bytes"):
        table.add_column(column)
    for b in bundles:
        table.add_row(b.sha256[:16], b.model, b.version, str(b.sequence), b.target, f"{b.size:,}")
    return table


def dead_letters_table(letters: Sequence[DeadLetterView], title: str = "Dead letters") -> Table:
    table = Table(title=title)
    for column in ("received", "topic", "bytes", "reason"):
        table.add_column(column)
    for d in letters:
        table.add_row(f"{d.received_at:%H:%M:%S}", d.topic, str(d.bytes), d.reason[:140])
    return table


def audit_table(entries: Sequence[AuditView], title: str = "Audit log") -> Table:
    table = Table(title=title)
    for column in ("when", "who", "what", "on", "result"):
        table.add_column(column)
    for e in entries:
        style = "green" if e.result == "ok" else "red"
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target or "-",
                      f"[{style}]{escape(e.result[:160])}[/]")
    return table
