"""Sustained telemetry ingestion through a real Mosquitto (MQTT v5): messages per second stored
(validated, de-duplicated, committed, then acknowledged) with 1 and 2 shared-subscription workers,
against the broker's raw delivery rate to one plain paho subscriber.

    python -m benchmarks.ingest [--messages 5000] [--rounds 3] [--postgres postgresql://user@host:port/db]

Each round measures the raw delivery and then every ingestion path right after it (interleaved, a
fresh store each time), so a busy moment on the shared host skews one round, not the comparison:
the table shows each path's median rate and its median ratio to the same round's raw delivery.

SQLite always; PostgreSQL when a URL is given. Needs ``mosquitto`` on PATH (scripts/test.sh
installs it)."""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from cloud.broker import free_port
from cloud.ingest import IngestWorker
from cloud.store import Base, TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.common import LatencyStats
from contract.telemetry import Telemetry
from transport.client import MqttTransport
from transport.config import BrokerConfig

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def payloads(count: int, devices: int = 50) -> list[tuple[str, bytes]]:
    out = []
    for i in range(count):
        device = f"fridge-{i % devices:03d}"
        w = Telemetry(device_id=device, seq=i, window_start=T0 + timedelta(seconds=i),
                      window_end=T0 + timedelta(seconds=i + 60), inferences=60, predictions={"apple": 30, "can": 12},
                      inventory={"apple": 2}, latency_ms=LatencyStats(p50=1.1, p95=2.0, p99=2.5, mean=1.2, max=3.0))
        out.append((topics.telemetry(device), w.to_json()))
    return out


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    process = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, f"mqtt://127.0.0.1:{port}"


def publish_all(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    port = int(url.rsplit(":", 1)[1])
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def raw_rate(url: str, messages: list[tuple[str, bytes]]) -> float:
    got: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: got.put(1)
    client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.loop_start()
    client.subscribe(topics.all_devices(topics.TopicKind.TELEMETRY), 1)
    time.sleep(0.5)
    started = time.perf_counter()
    threading.Thread(target=publish_all, args=(url, messages), daemon=True).start()
    for _ in messages:
        got.get(timeout=60)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def ingest_rate(url: str, store: str, workers: int, messages: list[tuple[str, bytes]]) -> float:
    sessions = open_store(store)
    engine = sessions.kw["bind"]
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    stop = threading.Event()
    running = []
    for i in range(workers):
        # stable client ids, as a deployment would use: a persistent session that is never resumed
        # stays a member of the shared subscription and keeps its share of the messages queued
        transport = MqttTransport(f"bench-ingest-{workers}w-{i}", BrokerConfig(url=url, protocol="5"), manual_ack=True)
        worker = IngestWorker(transport, sessions, share_group="ingest" if workers > 1 else None, batch=500)
        threading.Thread(target=worker.run, args=(stop,), daemon=True).start()
        worker.connected.wait(10)
        running.append(worker)
    time.sleep(0.5)
    started = time.perf_counter()
    threading.Thread(target=publish_all, args=(url, messages), daemon=True).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with sessions() as session:
            if (session.scalar(select(func.count()).select_from(TelemetryRow)) or 0) >= len(messages):
                break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    engine.dispose()
    return len(messages) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--postgres", default=None, help="postgresql://user@host:port/db to measure too")
    args = parser.parse_args()
    console = Console()
    messages = payloads(args.messages)
    paths = [("SQLite", workers) for workers in (1, 2)] + [("PostgreSQL", w) for w in (1, 2) if args.postgres]
    rates: dict[tuple[str, int], list[float]] = {path: [] for path in paths}
    ratios: dict[tuple[str, int], list[float]] = {path: [] for path in paths}
    raw: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker, url = start_mosquitto(Path(tmp))
        try:
            for round_ in range(args.rounds):
                raw.append(raw_rate(url, messages))
                for name, workers in paths:
                    store = (sqlite_url(Path(tmp) / f"bench-{round_}-{workers}.db") if name == "SQLite"
                             else str(args.postgres))
                    rate = ingest_rate(url, store, workers, messages)
                    rates[(name, workers)].append(rate)
                    ratios[(name, workers)].append(rate / raw[-1])
                console.print(f"round {round_ + 1}/{args.rounds}: raw {raw[-1]:,.0f}/s, " + ", ".join(
                    f"{n} x{w} {rates[(n, w)][-1]:,.0f}/s" for n, w in paths))
        finally:
            broker.terminate()
    table = Table(title=f"Telemetry ingestion, {args.messages} windows (~{len(messages[0][1])} B each), Mosquitto v5, "
                        f"median of {args.rounds} interleaved rounds")
    for column in ("path", "store", "workers", "messages/s", "ratio to raw"):
        table.add_column(column, justify="left" if column in ("path", "store") else "right")
    table.add_row("broker -> 1 plain paho subscriber (no store)", "-", "-", f"{statistics.median(raw):,.0f}", "1")
    for name, workers in paths:
        table.add_row("ingestion", name, str(workers), f"{statistics.median(rates[(name, workers)]):,.0f}",
                      f"{statistics.median(ratios[(name, workers)]):.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
