"""Row: the cloud's ingestion and its rollout controller SIGKILLed mid-batch, each a real process of
its own (``benchmarks.faults.cloudproc``) against one SQLite store and a Mosquitto with persistence
and unbounded queues (QoS 1 messages for an offline persistent session wait there).

Ingestion: ``devices`` simulated devices (a real agent ``Spool`` and ``Uplink`` each, as in the
burst row) start with a backlog and keep closing windows while the ingestion process is killed,
each kill at another moment: at a random delay once the store's row count passed a random
threshold, inside a batch's transaction (storing its n-th message), or after a batch's commit and
before its acks (at its n-th ack); it is down for a random while, then started again. Must hold:
every spool empties (the cloud confirmed everything) and the store holds each (device, epoch, seq)
produced exactly once, no other. The controller part is in ``rolloutkill``."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.faults import rolloutkill
from benchmarks.faults.broker import Restartable
from benchmarks.faults.burst import Device, close_window, devices
from benchmarks.faults.cloudproc import CloudProcess
from benchmarks.faults.report import Row
from benchmarks.faults.world import World
from cloud.store import TelemetryRow, open_store, sqlite_url
from transport.loop import SharedLoop

FAULT = "ingestion / controller SIGKILLed mid-batch (each a real process)"
MUST_HOLD = (f"ingestion: every spool empties; each (device, epoch, seq) stored once, 0 lost, 0 duplicated; "
             f"controller: {rolloutkill.MUST_HOLD}")
MOMENTS = ("at a random row count", "mid_transaction", "after_commit")
BACKLOG = 40  # windows each device holds before the first kill
RATE = 150.0  # windows per second over all devices while the kills go on
RESEND_S = 3.0  # a window unconfirmed this long is sent again (its ack died with the process)
DOWN_S = 1.0  # the process stays down up to this long (the windows queue at the broker)
DRAIN_S = 300.0  # after the last kill, every spool must be empty within this


def run(world: World, ingest_kills: int, controller_kills: int, devices_count: int, seed: int, workdir: Path) -> Row:
    row = Row(FAULT, MUST_HOLD)
    with row.timed():
        ingestion(ingest_kills, devices_count, seed, workdir / "cloudkill-ingest", row)
        rolloutkill.run(world, controller_kills, seed, workdir / "cloudkill-controller", row)
    row.how_often = (f"{ingest_kills} ingestion kills ({devices_count} devices), "
                     f"{controller_kills} controller kills ({rolloutkill.AGENTS} devices, "
                     f"{rolloutkill.WAVES} waves)")
    return row


class Flow:
    """The devices' side in a thread: close windows at ``rate`` while ``producing``, route acks,
    send what is due; ``produced`` holds every window closed."""

    def __init__(self, fleet: list[Device], rate: float) -> None:
        self.fleet, self.rate = fleet, rate
        self.produced: set[tuple[str, str, int]] = set()
        self.producing, self.stop = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="cloudkill-devices")

    def _run(self) -> None:
        interval, next_at = len(self.fleet) / self.rate, time.monotonic()
        while not self.stop.is_set():
            if self.producing.is_set() and time.monotonic() >= next_at:
                next_at += interval
                with self.lock:
                    self.produced |= {close_window(d.spool, d.uplink.device_id) for d in self.fleet}
            for device in self.fleet:
                device.turn()
            time.sleep(0.01)  # one turn over the fleet, then let the network thread run

    def left(self) -> int:
        return sum(d.spool.size for d in self.fleet)


def ingestion(kills: int, count: int, seed: int, folder: Path, row: Row) -> None:
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    plans = [(MOMENTS[i % len(MOMENTS)], rng.randint(1, 400) if i % 3 == 1 else rng.randint(1, 60))
             for i in range(kills)]
    broker = Restartable(folder).start()
    store = sqlite_url(folder / "cloud.db")
    sessions = open_store(store)
    cloud = CloudProcess("ingest", store, broker.url, folder, "cloudkill-ingest")
    loop = SharedLoop()
    flow = Flow([], RATE)
    at_kill: list[int] = []
    started = time.monotonic()
    try:
        cloud.start(*_fault(plans[0]) if plans else (None,))
        flow = Flow(devices(folder, broker.url, count, BACKLOG, loop, RESEND_S, room=1_000_000), RATE)
        flow.produced = {(d.uplink.device_id, d.spool.epoch, s) for d in flow.fleet for s in range(1, BACKLOG + 1)}
        for device in flow.fleet:
            device.transport.start()
        flow.producing.set()
        flow.thread.start()
        for index, (moment, after) in enumerate(plans):
            where = f"ingestion kill {index + 1} ({moment}{'' if moment == MOMENTS[0] else f' at {after}'})"
            code = _kill(cloud, moment, after, rng, lambda: _rows(sessions))
            if code != -9:
                row.violated(where, f"the process ended with {code}, not by SIGKILL (fault point not reached?)")
            at_kill.append(_rows(sessions))
            time.sleep(rng.uniform(0, DOWN_S))  # down for a while: the devices keep sending to the broker
            cloud.start(*_fault(plans[index + 1]) if index + 1 < len(plans) else (None,))
        flow.producing.clear()
        with flow.lock:
            expected = set(flow.produced)
        deadline = time.monotonic() + DRAIN_S
        while flow.left() and time.monotonic() < deadline:
            time.sleep(0.1)  # the spools empty as the cloud confirms: the positive signal polled
        if flow.left():
            row.violated("ingestion", f"{flow.left()} windows still unconfirmed {DRAIN_S:.0f} s after the last kill")
    finally:
        flow.stop.set()
        if flow.thread.is_alive():
            flow.thread.join(timeout=10)
        for device in flow.fleet:
            device.transport.stop()
        loop.stop()
        cloud.stop()
        broker.stop()
        for device in flow.fleet:
            device.spool.close()
    _check(sessions, expected, row)
    row.notes.append(
        f"ingestion: {len(expected)} windows from {count} devices through {kills} kills "
        f"({', '.join(f'{n} {m}' for m, n in Counter(p[0] for p in plans).items())}) in "
        f"{time.monotonic() - started:.0f} s; rows stored at each kill {at_kill[:8]}{' ...' if kills > 8 else ''}; "
        f"{sum(d.uplink.resent for d in flow.fleet)} windows re-sent after a lost ack; ingestion process "
        f"start -> subscribed median {sorted(cloud.starts)[len(cloud.starts) // 2]:.2f} s")
    sessions.kw["bind"].dispose()


def _fault(plan: tuple[str, int]) -> tuple[str | None, int]:
    moment, after = plan
    return (None, 1) if moment == MOMENTS[0] else (moment, after)


def _kill(cloud: CloudProcess, moment: str, after: int, rng: random.Random, rows: Callable[[], int]) -> int | None:
    """SIGKILL the ingestion process at the plan's moment; its exit code."""
    if moment != MOMENTS[0]:  # it kills itself at its fault point
        code = cloud.exited(120)
        if code is None:
            cloud.kill()
        return code
    threshold = rows() + rng.randint(1, 300)
    deadline = time.monotonic() + 120
    while rows() < threshold and time.monotonic() < deadline:
        time.sleep(0.02)  # the store's row count: the positive signal that batches are flowing
    time.sleep(rng.uniform(0, 0.2))  # a moment that differs from kill to kill (the fault's timing)
    return cloud.kill()


def _rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(TelemetryRow)) or 0)


def _check(sessions: sessionmaker[Session], expected: set[tuple[str, str, int]], row: Row) -> None:
    with sessions() as session:
        stored = Counter((d, e, s) for d, e, s in session.execute(
            select(TelemetryRow.device_id, TelemetryRow.epoch, TelemetryRow.seq)).all())
    lost, extra = expected - set(stored), set(stored) - expected
    for what, problem in ((lost, "lost"), (extra, "stored but never produced")):
        if what:
            row.violated("ingestion", f"{len(what)} windows {problem}, e.g. {sorted(what)[:3]}")
    twice = sum(n - 1 for n in stored.values())
    if twice:
        row.violated("ingestion", f"{twice} windows stored more than once")
