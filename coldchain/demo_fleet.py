"""The fleet half of ``coldchain demo``: the embedded broker, the cloud and simulated fridges in two
groups; v1 rolled out in waves while the fridges take inventory of generated photos; then a
deliberately faulty v2 that fails its prediction-drift gate and is rolled back automatically."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.loop import Agent
from agent.simulate import simulated_agents
from cloud import rollouts
from cloud.audit import cli_actor
from cloud.broker import EmbeddedBroker
from cloud.operations import Operations
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.queries import DeviceFilter, Paging, Queries
from cloud.service import Cloud
from cloud.store import sqlite_url
from coldchain.cloud_views import alerts_table, fleet_table, monitor_table, rollout_table
from coldchain.console import console
from contract.signing import TrustStore, load_private_key

GROUPS = ("kitchen-eu", "kitchen-us")


@dataclass(frozen=True)
class FleetResult:
    rollout: str
    status: str
    seconds: float
    devices: int
    reason: str | None


def demo_plan(groups: list[str], waves: str) -> RolloutPlan:
    """Short probation and observation so the demo fits in minutes; production keeps the defaults."""
    return RolloutPlan(selector=Selector(groups=groups), waves=waves,
                       gates=Gates(min_inferences=20),
                       timeouts=Timeouts(ack_s=3, wave_s=90, observe_s=4), probation_s=3, chunk_size=64 * 1024)


def run_fleet(workspace: Path, bundles: list[Path], keys: tuple[Path, Path], frames: Path,
              per_group: int) -> list[FleetResult]:
    private, public = keys
    with EmbeddedBroker() as broker:
        console.print(f"embedded broker on [bold]{broker.url}[/] (amqtt, 127.0.0.1 only; a password per "
                      "device and for the cloud, the contract's ACL)")
        config = broker.cloud_credentials(reconnect_min_s=1)
        store = sqlite_url(workspace / "cloud.db")
        (workspace / "cloud.db").unlink(missing_ok=True)
        cloud = Cloud(store, config, load_private_key(private), notify=lambda m: console.log(f"[cyan]{m}"))
        agents: list[Agent] = []
        for group in GROUPS:
            agents += simulated_agents(per_group, config, workspace / "devices", [public], [group], frames,
                                       prefix=group, inference_interval_s=0.25, telemetry_window_s=2,
                                       credentials=lambda d: broker.device_credentials(d, reconnect_min_s=1))
        stop = threading.Event()
        threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True) for a in agents]
        cloud.start()
        for thread in threads:  # staggered, as a real fleet connects (amqtt dislikes a stampede)
            thread.start()
            time.sleep(0.05)
        try:
            return _rollouts(cloud, agents, bundles, public)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
            cloud.stop()


def _rollouts(cloud: Cloud, agents: list[Agent], bundles: list[Path], public: Path) -> list[FleetResult]:
    queries, operator = Queries(cloud.sessions), Operations(cloud.sessions, cli_actor())
    _wait_online(queries, len(agents))
    good, faulty = (operator.add_bundle(b, TrustStore.from_paths([public])).sha256 for b in bundles)
    console.print(fleet_table(queries.devices(DeviceFilter(limit=6)).items))
    console.print(f"... {len(agents)} simulated fridges in groups {', '.join(GROUPS)}, one shared model "
                  "session per bundle")
    results = [_follow(queries, operator.start_rollout(good, demo_plan(list(GROUPS), "1,25%,100%"), "demo-v1"),
                       "v1 to every fridge")]
    time.sleep(4)  # a few telemetry windows on v1: the baseline the v2 gate compares with
    console.print(monitor_table(queries.telemetry("group", None), "Telemetry per group (v1 everywhere)"))
    results.append(_follow(queries, operator.start_rollout(faulty, demo_plan([GROUPS[0]], "2,50%,100%"), "demo-v2"),
                           "faulty v2 to kitchen-eu"))
    console.print(monitor_table(queries.telemetry("bundle", None), "Telemetry per bundle"))
    console.print(alerts_table(list(reversed(queries.alerts(Paging(limit=500)).items))))
    return results


def _wait_online(queries: Queries, count: int, timeout: float = 60) -> None:
    with console.status(f"waiting for {count} fridges to come online"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if queries.online() >= count:
                return
            time.sleep(0.3)
    raise TimeoutError(f"only some of {count} simulated fridges came online within {timeout:.0f} s")


def _follow(queries: Queries, rollout_id: str, what: str, timeout: float = 240) -> FleetResult:
    started = time.monotonic()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"rollout {rollout_id}: {what}", total=1, status="")
        while time.monotonic() - started < timeout:
            view = queries.rollout(rollout_id)
            done = sum(1 for d in view.devices if d.state in ("SUCCEEDED", "SKIPPED") or d.rolled_back)
            progress.update(task, total=len(view.devices), completed=done,
                            status=f"{view.status} wave {view.wave}/{view.waves}")
            if view.status in rollouts.FINISHED:
                break
            time.sleep(0.5)
    view = queries.rollout(rollout_id)
    console.print(rollout_table(view))
    return FleetResult(rollout_id, view.status, time.monotonic() - started, len(view.devices), view.reason)


def summary_table(results: list[FleetResult]) -> Table:
    table = Table(title="Rollouts in this demo")
    for column in ("rollout", "devices", "result", "time", "why"):
        table.add_column(column)
    for r in results:
        colour = "green" if r.status == "SUCCEEDED" else "yellow"
        table.add_row(r.rollout, str(r.devices), f"[{colour}]{r.status}[/]", f"{r.seconds:.0f} s",
                      (r.reason or "all gates passed")[:110])
    return table
