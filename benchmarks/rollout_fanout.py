"""A 4 MiB bundle to 200 simulated agents through Mosquitto (MQTT v5), as a one-wave rollout:
completion time, the cloud's egress bytes against the bundle size, repairs, and the same bytes
pushed by a plain paho publisher to each of the same number of subscribers one by one.

    python -m benchmarks.rollout_fanout [--agents 200] [--mib 4]

The bundle is the demo fridge model compiled for arm64-cortex-a72-ort, padded with an
incompressible ``other`` file to the asked size and signed again (a valid, verifiable bundle).
Needs ``mosquitto`` on PATH."""

from __future__ import annotations

import argparse
import queue
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from agent.simulate import simulated_agents
from benchmarks.faults.broker import mosquitto
from benchmarks.faults.device import NO_FRAMES
from benchmarks.faults.world import build_world, padded_bundle
from cloud import rollouts
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.service import Cloud
from cloud.store import Device, EventRow, RolloutDevice, sqlite_url
from contract import signing
from contract.transfer import DEFAULT_CHUNK_SIZE, encode_chunk
from transport.config import BrokerConfig

console = Console()


def coldchain_rollout(url: str, tarball: Path, key_dir: Path, work: Path, agents: int) -> dict[str, float]:
    broker = BrokerConfig(url=url, protocol="5", reconnect_min_s=1)
    fleet = simulated_agents(agents, broker, work / "devices", [key_dir / "ops.pub"], ["bench"], None,
                             telemetry_window_s=2, probation=NO_FRAMES)  # probation is judged per window
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True) for a in fleet]
    cloud = Cloud(sqlite_url(work / "cloud.db"), broker, signing.load_private_key(key_dir / "ops.key")).start()
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    try:
        _wait(cloud, lambda s: len(s.scalars(select(Device.id).where(Device.online.is_(True))).all()) >= agents,
              "agents online", agents, 120)
        with cloud.sessions.begin() as session:
            sha = add_bundle(session, tarball, signing.TrustStore.from_paths([key_dir / "ops.pub"])).sha256
        plan = RolloutPlan(waves="100%", probation_s=1,  # type: ignore[arg-type]
                           gates=Gates(min_inferences=0, max_error_rate=None, max_latency_ratio=None,
                                       max_prediction_drift=None),
                           timeouts=Timeouts(ack_s=15, wave_s=900, observe_s=0))
        started = time.monotonic()
        rollout = rollouts.start(cloud.sessions, sha, plan, "fanout")

        def past(states: set[str]):  # type: ignore[no-untyped-def]
            return lambda s: sum(1 for d in s.scalars(select(RolloutDevice).where(
                RolloutDevice.rollout_id == rollout)).all() if d.state in states)

        downloaded_states = {"VERIFYING", "INSTALLING", "SELF_TEST", "ACTIVATING", "PROBATION", "SUCCEEDED"}
        _wait(cloud, lambda s: past(downloaded_states)(s) >= agents, "devices with the whole bundle", agents, 900,
              past(downloaded_states))
        downloaded = time.monotonic() - started
        _wait(cloud, lambda s: rollouts.view(s, rollout).rollout.status in rollouts.FINISHED, "rollout finished",
              agents, 900, past({"SUCCEEDED"}))
        done = time.monotonic() - started
        with cloud.sessions() as session:
            view = rollouts.view(session, rollout)
            status, succeeded = view.rollout.status, past({"SUCCEEDED"})(session)
            # the transfer itself: first chunk published -> the last device reports the bundle whole
            last = session.scalar(select(func.max(EventRow.ts)).where(EventRow.job_id.like(f"{rollout}.%"),
                                                                      EventRow.state == "VERIFYING"))
            sent = view.rollout.chunks_published_at
            transfer = (last - sent).total_seconds() if last and sent else float("nan")
        return {"download_s": downloaded, "transfer_s": transfer, "done_s": done,
                "egress": float(cloud.publisher.egress_bytes),
                "repairs": float(cloud.publisher.repair_bytes), "succeeded": float(succeeded),
                "ok": float(status == rollouts.SUCCEEDED)}
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
        cloud.stop()


def _wait(cloud: Cloud, done, what: str, total: int, timeout: float, count=None) -> None:  # type: ignore[no-untyped-def]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with cloud.sessions() as session:
                if count is not None:
                    progress.update(task, completed=count(session))
                if done(session):
                    return
            time.sleep(0.25)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def plain_paho(url: str, tarball: Path, subscribers: int) -> dict[str, float]:
    """Unicast baseline: the same chunk frames published to each subscriber's own topic."""
    data = tarball.read_bytes()
    count = -(-len(data) // DEFAULT_CHUNK_SIZE)
    frames = [encode_chunk("0" * 64, i, count, data[i * DEFAULT_CHUNK_SIZE:(i + 1) * DEFAULT_CHUNK_SIZE])
              for i in range(count)]
    port = int(url.rsplit(":", 1)[1])
    received: queue.Queue[int] = queue.Queue()
    clients = []
    for i in range(subscribers):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"plain-{i}", protocol=mqtt.MQTTv5)
        client.on_message = lambda c, u, m: received.put(len(m.payload))
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(f"bench/plain/{i}", 1)
        clients.append(client)
    time.sleep(2)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    started = time.monotonic()
    egress = 0
    for i in range(subscribers):
        for frame in frames:
            publisher.publish(f"bench/plain/{i}", frame, qos=1)
            egress += len(frame)
    expected = subscribers * len(frames)
    for _ in range(expected):
        received.get(timeout=600)
    elapsed = time.monotonic() - started
    for client in [*clients, publisher]:
        client.disconnect()
        client.loop_stop()
    return {"done_s": elapsed, "egress": float(egress)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--mib", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coldchain-fanout-") as tmp:
        root = Path(tmp)
        with console.status("compiling and padding the bundle"):
            world = build_world(root / "build", sequences=(1,))
            bundle = world.bundles[1]
            pad = max(0.0, args.mib - bundle.tarball.stat().st_size / 2**20)  # the whole tarball is --mib
            tarball, _ = padded_bundle(bundle, world.trusted_key, root / "build", pad)
        size = tarball.stat().st_size
        with mosquitto(root, unbounded_queues=True) as url:
            ours = coldchain_rollout(url, tarball, world.root / "keys", root / "run", args.agents)
            plain = plain_paho(url, tarball, args.agents)
    table = Table(title=f"{size / 2**20:.2f} MiB bundle to {args.agents} agents through Mosquitto (MQTT v5)")
    for column in ("", "coldchain rollout (group fan-out)", "plain paho (one publish per subscriber)"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("transfer: first chunk out -> every device has every chunk", f"{ours['transfer_s']:.2f} s",
                  f"{plain['done_s']:.2f} s")
    table.add_row("rollout start -> every device has the bundle (commands, acks, store)",
                  f"{ours['download_s']:.1f} s", "-")
    table.add_row("rollout SUCCEEDED (verified, installed, self-tested, probation)", f"{ours['done_s']:.1f} s", "-")
    table.add_row("devices succeeded", f"{ours['succeeded']:.0f}/{args.agents}", "-")
    table.add_row("cloud egress", f"{ours['egress'] / 2**20:.2f} MiB", f"{plain['egress'] / 2**20:.1f} MiB")
    table.add_row("egress / bundle size", f"{ours['egress'] / size:.3f}x", f"{plain['egress'] / size:.1f}x")
    table.add_row("of which repairs", f"{ours['repairs'] / 2**20:.2f} MiB", "-")
    table.add_row("transfer time ratio (plain / coldchain)", f"{plain['done_s'] / ours['transfer_s']:.2f}", "")
    console.print(table)


if __name__ == "__main__":
    main()
