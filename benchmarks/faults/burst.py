"""Row 7, a telemetry burst on stock broker settings: ``devices`` simulated devices, each a real
agent ``Spool`` holding its share of ``windows`` and a real ``Uplink`` over a real ``MqttTransport``
(all on one ``SharedLoop``), send them through a Mosquitto with its stock limits (1,000 queued
messages per client, 20 in flight) to the real cloud ``IngestWorker`` and a SQLite store.

Must hold: every spool empties (the cloud acked everything), and the store holds each window
exactly once: every (device, epoch, seq) produced, no other, no duplicate row. Before end-to-end
acks the agent deleted on the broker's PUBACK, and such a burst lost 64 %."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from agent.spool import Spool
from agent.uplink import Uplink
from benchmarks.faults.broker import mosquitto
from benchmarks.faults.report import Row
from cloud.ingest import IngestWorker
from cloud.store import TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.telemetry import Telemetry
from transport.client import Connected, Disconnected, MqttTransport, Received
from transport.config import BrokerConfig
from transport.loop import SharedLoop

T0 = datetime(2026, 11, 26, tzinfo=UTC)


@dataclass
class Device:
    spool: Spool
    transport: MqttTransport
    uplink: Uplink

    def turn(self) -> None:
        """What the agent's loop does for telemetry: route its inbox, then send what is due."""
        while not self.transport.inbox.empty():
            item = self.transport.inbox.get_nowait()
            if isinstance(item, Connected):
                self.transport.subscribe([self.uplink.subscription])
                self.uplink.on_connected()
            elif isinstance(item, Disconnected):
                self.uplink.on_disconnected()
            elif isinstance(item, Received) and topics.parse(item.topic).kind is topics.TopicKind.ACKS:
                self.uplink.on_ack(item.payload)
        self.uplink.pump()


def close_window(spool: Spool, device_id: str) -> tuple[str, str, int]:
    """A telemetry window closed into the device's spool, as the agent does; its (device, epoch, seq)."""
    seq, _ = spool.append(lambda seq: Telemetry(device_id=device_id, seq=seq, epoch=spool.epoch, inferences=seq,
                                                window_start=T0 + timedelta(seconds=seq),
                                                window_end=T0 + timedelta(seconds=seq + 1)).to_json())
    return device_id, spool.epoch, seq


def devices(folder: Path, url: str, count: int, windows: int, loop: SharedLoop,
            resend_after_s: float, room: int = 1) -> list[Device]:
    """``count`` devices with ``windows`` closed windows each, in spools with ``room`` more."""
    out = []
    for number in range(count):
        device_id = f"burst-{number:04d}"
        spool = Spool(folder / f"{device_id}.db", max_windows=windows + room)
        for _ in range(windows):  # the burst: every window is closed before the first is sent
            close_window(spool, device_id)
        config = BrokerConfig(url=url, protocol="5", reconnect_min_s=1, reconnect_max_s=4)
        transport = MqttTransport(device_id, config, loop=loop)
        out.append(Device(spool, transport, Uplink(spool, transport, device_id, resend_after_s=resend_after_s)))
    return out


def burst(folder: Path, count: int, windows: int, row: Row, resend_after_s: float = 10.0,
          timeout_s: float = 900.0) -> None:
    """One burst on a fresh stock Mosquitto and a fresh store; violations go to ``row``."""
    folder.mkdir(parents=True)
    sessions = open_store(sqlite_url(folder / "cloud.db"))
    with mosquitto(folder) as url:  # stock limits: nothing about queues in its configuration
        worker = IngestWorker(MqttTransport("burst-cloud", BrokerConfig(url=url, protocol="5"), manual_ack=True),
                              sessions)
        stop = threading.Event()
        cloud = threading.Thread(target=worker.run, args=(stop,), name="burst-ingest", daemon=True)
        cloud.start()
        loop = SharedLoop()
        fleet: list[Device] = []
        try:
            if not worker.subscribed.wait(30):
                row.violated("cloud", "the ingestion worker did not subscribe within 30 s")
                return
            fleet = devices(folder, url, count, windows, loop, resend_after_s)
            expected = {(d.uplink.device_id, d.spool.epoch, s) for d in fleet for s in range(1, windows + 1)}
            started = time.monotonic()
            for device in fleet:
                device.transport.start()
            while any(d.spool.size for d in fleet) and time.monotonic() - started < timeout_s:
                for device in fleet:
                    device.turn()
                time.sleep(0.01)  # one turn over the fleet, then let the network thread and the cloud run
            elapsed = time.monotonic() - started
            left = sum(d.spool.size for d in fleet)
            if left:
                row.violated(folder.name, f"{left} windows still unconfirmed after {timeout_s:.0f} s")
        finally:
            for device in fleet:
                device.transport.stop()
            loop.stop()
            stop.set()
            cloud.join(timeout=30)
            for device in fleet:
                device.spool.close()
    with sessions() as session:
        stored = Counter((d, e, s) for d, e, s in session.execute(
            select(TelemetryRow.device_id, TelemetryRow.epoch, TelemetryRow.seq)).all())
    sessions.kw["bind"].dispose()
    lost, extra = expected - set(stored), set(stored) - expected
    twice = sum(n - 1 for n in stored.values())
    for what, problem in ((lost, "lost"), (extra, "stored but never produced")):
        if what:
            row.violated(folder.name, f"{len(what)} windows {problem}, e.g. {sorted(what)[:3]}")
    if twice:
        row.violated(folder.name, f"{twice} duplicate rows")
    sent = sum(d.uplink.confirmed for d in fleet)
    resent = sum(d.uplink.resent for d in fleet)
    row.notes.append(f"{folder.name}: {len(stored)} of {len(expected)} windows stored once in {elapsed:.0f} s "
                     f"({len(expected) / elapsed:.0f}/s), {resent} re-sent after a timeout, {sent} confirmed, "
                     f"cloud {worker.counts['stored']} stored + {worker.counts['duplicate']} duplicates, "
                     f"{worker.counts['acks']} acks")


def run(total: int, count: int, repeats: int, workdir: Path) -> Row:
    row = Row(f"burst of {total:,} windows from {count} devices, stock broker settings",
              "0 windows lost end to end (device spool -> store), 0 duplicates", f"{repeats}")
    with row.timed():
        for number in range(repeats):
            burst(workdir / f"burst-{number + 1}", count, total // count, row)
    return row
