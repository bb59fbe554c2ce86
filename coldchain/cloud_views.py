"""Tables the cloud commands and the demo print: fleet, rollouts, monitoring, alerts. Plus the
options every cloud command shares (``--db``, ``--broker``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from cloud.monitor import MonitorRow
    from cloud.rollouts import RollbackStep, RolloutView
    from cloud.store import Alert, Device, Rollout

Db = Annotated[str, typer.Option("--db", envvar="COLDCHAIN_DB",
                                 help="Store URL: sqlite:///PATH or postgresql://user:pw@host/db.")]
Broker = Annotated[str, typer.Option("--broker", envvar="COLDCHAIN_BROKER", help="mqtt://host:port or mqtts://...")]
Protocol = Annotated[str, typer.Option(help="MQTT protocol: 5, or 3.1.1 for brokers without v5 (amqtt).")]
DEFAULT_DB = "sqlite:///coldchain.db"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def open_sessions(db: str) -> sessionmaker[Session]:
    """The store behind ``--db`` (imported here, lazily, so ``coldchain --help`` stays light)."""
    from cloud.store import open_store

    return open_store(db)


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def agent_cell(d: Device) -> str:
    """The agent's version and protocol; ``needs a new agent`` when the cloud cannot command it."""
    from contract.versions import needs_new_agent

    if d.protocol is None:
        return d.agent_version or "-"
    cell = f"{d.agent_version or '?'} (protocol {d.protocol})"
    return cell + (" [bold red]needs a new agent[/]" if needs_new_agent(d.protocol) else "")


def fleet_table(devices: Sequence[Device]) -> Table:
    table = Table(title=f"Fleet ({len(devices)} devices)")
    for column in ("device", "online", "board", "agent", "groups", "tags", "active bundle", "job", "last seen"):
        table.add_column(column)
    for d in devices:
        active = "-" if not d.active else f"{d.active['model_name']} #{d.active['sequence']}"
        table.add_row(d.id, "[green]yes[/]" if d.online else "[red]no[/]", d.board or "-", agent_cell(d),
                      ",".join(d.all_groups()) or "-", ",".join(f"{k}={v}" for k, v in d.tags.items()) or "-",
                      active, f"{d.job_state or '-'}", _age(d.last_seen))
    return table


STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "ROLLED_BACK": "yellow", "TIMED_OUT": "red",
               "RUNNING": "cyan", "ROLLING_BACK": "yellow", "ABORTED": "red", "PAUSED": "magenta",
               "SUPERSEDED": "dim"}


def _styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def rollouts_table(rollouts: Sequence[Rollout]) -> Table:
    table = Table(title="Rollouts")
    for column in ("rollout", "bundle", "status", "wave", "reason", "created"):
        table.add_column(column)
    for r in rollouts:
        table.add_row(r.id, r.bundle_sha256[:12], _styled(r.status), str(r.wave + 1), (r.reason or "")[:90],
                      _age(r.created_at))
    return table


def rollout_table(view: RolloutView) -> Table | Group:
    """A rollout wave by wave, and under it the devices' own reasons for failed jobs, grouped."""
    r, b = view.rollout, view.bundle
    name = f"{b.model_name} v{b.model_version} #{b.sequence}" if b else r.bundle_sha256[:12]
    table = Table(title=f"Rollout {r.id}: {name} -> {_styled(r.status)}, wave {r.wave + 1}/{view.waves()}")
    for column in ("wave", "devices", "states", "gates"):
        table.add_column(column)
    gates = {g["wave"]: g["results"] for g in r.gate_results}
    for wave in range(view.waves()):
        devices = [d for d in view.devices if d.wave == wave]
        states: dict[str, int] = {}
        for d in devices:
            key = "ROLLED_BACK" if d.rolled_back else d.state
            states[key] = states.get(key, 0) + 1
        verdicts = gates.get(wave, [])
        gate_text = ", ".join(("[green]" if g["passed"] else "[red]") + g["gate"] + (
            f" {g['value']:.3g}" if isinstance(g["value"], int | float) else "") + "[/]" for g in verdicts) or "-"
        table.add_row(str(wave + 1), str(len(devices)),
                      ", ".join(f"{_styled(k)} {v}" for k, v in sorted(states.items())), gate_text)
    if r.reason:
        table.caption = r.reason
    reasons = view.reasons()
    if not reasons:
        return table
    lines = ["The devices' reasons for their failed jobs:", *(f"  {n} × {why}" for n, why in reasons[:10])]
    if len(reasons) > 10:
        lines.append(f"  ... and {len(reasons) - 10} other reasons")
    return Group(table, Text("\n".join(lines)))  # not wrapped to the table's width


def rollback_plan_table(rollout_id: str, plan: Sequence[RollbackStep]) -> Table:
    """Which device goes to which bundle, from what each device reported (before anything is sent)."""
    table = Table(title=f"Rolling back {rollout_id}: the plan")
    for col in ("device", "action", "runs now", "goes to", "why"):
        table.add_column(col)
    style = {"roll back": "yellow", "impossible": "red", "cancel": "yellow", "nothing": "dim"}

    def ref(bundle: dict[str, object] | None) -> str:
        return "-" if not bundle else f"#{bundle.get('sequence')} {str(bundle.get('sha256', ''))[:10]}"

    for step in plan:
        table.add_row(step.device_id, f"[{style.get(step.action, 'white')}]{step.action}[/]", ref(step.current),
                      ref(step.to), step.why)
    return table


def monitor_table(rows: Sequence[MonitorRow], title: str) -> Table:
    table = Table(title=title)
    for column in ("subject", "devices", "windows", "inferences", "error rate", "p50 ms", "p95 ms",
                   "drift vs reference (JS)", "drift vs previous (JS)", "input drift (PSI)", "inventory (latest)"):
        table.add_column(column, justify="right" if column not in ("subject", "inventory (latest)") else "left")
    for row in rows:
        s = row.summary

        def num(value: float | None, fmt: str = ".2f") -> str:
            return "-" if value is None else format(value, fmt)

        inventory = ", ".join(f"{k} {v}" for k, v in sorted(s.inventory.items())) or "-"
        table.add_row(row.subject, str(len(s.devices)), str(s.windows), str(s.inferences), f"{s.error_rate:.1%}",
                      num(s.latency_p50), num(s.latency_p95), num(row.reference_drift, ".3f"),
                      num(row.previous_drift, ".3f"), num(row.input_psi, ".3f"), inventory)
    return table


def alerts_table(alerts: Sequence[Alert]) -> Table:
    table = Table(title=f"Alerts ({len(alerts)})")
    for column in ("when", "kind", "scope", "subject", "message"):
        table.add_column(column)
    for a in alerts:
        table.add_row(_age(a.created_at), a.kind, a.scope, a.subject, a.message[:160])
    return table
