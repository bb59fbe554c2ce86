"""A standalone agent process (`coldchain agent run`) receiving a bundle through a rollout and
inferring on photos: its resident memory and CPU as sampled from outside (psutil) and as it
reports them in its own telemetry.

    python -m benchmarks.agent_rss BUNDLE.tar.gz PUBLIC.pub PRIVATE.key [--seconds 40]

(``coldchain demo`` leaves a fridge bundle and its keys in demo-workspace/.)"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from cloud import rollouts
from cloud.broker import EmbeddedBroker
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.service import Cloud
from cloud.store import Device, TelemetryRow, sqlite_url
from contract.signing import TrustStore, load_private_key
from examples.fridge.synth import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("public", type=Path)
    parser.add_argument("private", type=Path)
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        root = Path(tmp)
        write_dataset(root / "frames", 60, seed=5)
        (root / "agent.toml").write_text(
            f'device_id = "fridge-rss"\ngroups = ["bench"]\ndata_dir = "{root / "data"}"\n'
            f'trusted_keys = ["{args.public.resolve()}"]\ninference_interval_s = 0.1\ntelemetry_window_s = 5\n'
            f'[broker]\nurl = "{broker.url}"\nprotocol = "3.1.1"\nusername = "fridge-rss"\n'
            f'password = "{broker.device_credentials("fridge-rss").password}"\n'
            f'[source]\nkind = "folder"\nlocation = "{root / "frames"}"\n[limits]\nthreads = 2\n')
        agent = subprocess.Popen([str(Path(sys.executable).parent / "coldchain"), "agent", "run", "--config",
                                  str(root / "agent.toml"), "--seconds", str(args.seconds + 30)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process = psutil.Process(agent.pid)
        cloud = Cloud(sqlite_url(root / "cloud.db"), broker.cloud_credentials(),
                      load_private_key(args.private)).start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with cloud.sessions() as session:
                    if session.get(Device, "fridge-rss") is not None:
                        break
                time.sleep(0.5)
            time.sleep(2)
            idle_rss = process.memory_info().rss
            with cloud.sessions.begin() as session:
                sha = add_bundle(session, args.bundle, TrustStore.from_paths([args.public])).sha256
            plan = RolloutPlan(waves="100%", probation_s=5,  # type: ignore[arg-type]
                               gates=Gates(min_inferences=0, max_latency_ratio=None), timeouts=Timeouts(observe_s=0))
            rollouts.start(cloud.sessions, sha, plan, "rss")
            samples, cpu = [], []
            process.cpu_percent()
            until = time.monotonic() + args.seconds
            while time.monotonic() < until:
                time.sleep(1)
                samples.append(process.memory_info().rss)
                cpu.append(process.cpu_percent())
            with cloud.sessions() as session:
                reported = [r.payload.get("resources") or {} for r in session.scalars(select(TelemetryRow)).all()]
                inferences = sum(r.inferences for r in session.scalars(select(TelemetryRow)).all())
                view = rollouts.view(session, "rss")
                status = " ".join(filter(None, [view.rollout.status, view.rollout.reason]))
        finally:
            cloud.stop()
            agent.terminate()
            agent.wait(timeout=30)
    table = Table(title=f"Standalone agent (fridge bundle, 10 frames/s, 2 threads), {args.seconds:.0f} s sampled")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("rollout", status)
    table.add_row("inferences reported", str(inferences))
    table.add_row("RSS before any bundle (psutil)", f"{idle_rss / 2**20:.1f} MiB")
    table.add_row("RSS with the model active, median / max (psutil)",
                  f"{sorted(samples)[len(samples) // 2] / 2**20:.1f} / {max(samples) / 2**20:.1f} MiB")
    rss = [r["rss_bytes"] for r in reported if r.get("rss_bytes")]
    table.add_row("RSS in the agent's own telemetry, max", f"{max(rss) / 2**20:.1f} MiB" if rss else "-")
    table.add_row("CPU, median (of one core)", f"{sorted(cpu)[len(cpu) // 2]:.0f} %")
    console.print(table)


if __name__ == "__main__":
    main()
