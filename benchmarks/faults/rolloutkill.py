"""The controller half of the ``cloudkill`` row: each round, a rollout of bundle 5 in three waves
(1, 50 %, 100 % of ``AGENTS`` simulated agents) runs with the controller in a process of its own
(``cloudproc controller``) beside an ingestion process, one SQLite store and a persistent Mosquitto.
The controller is SIGKILLed ``KILLS_PER_ROUND`` times per round, each at a (wave, phase) drawn at
random and reached as the store shows it: before the wave started, deploys issued (chunks not
streaming yet), chunks streaming (the plan's rate limit stretches the stream), or the wave settled
(observation and judging); then it is started again at once.

Must hold: the rollout resumes where it was: no wave restarted (a wave's start, stream and settle
times, once set, never change; the wave index never goes back), it ends SUCCEEDED; nothing
installed twice (one QUEUED and one VERIFYING in each device's job history); every command
delivered (each device one deploy, confirmed; every device SUCCEEDED on the bundle, running it)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.loop import Agent
from agent.simulate import simulated_agents
from benchmarks.faults.broker import Restartable
from benchmarks.faults.brokerkill import check_agents, check_succeeded, start_agents, stop_agents
from benchmarks.faults.cloudproc import CloudProcess
from benchmarks.faults.device import NO_FRAMES
from benchmarks.faults.report import Row
from benchmarks.faults.world import World
from cloud import rollouts
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.store import CommandRow, Device, Rollout, RolloutDevice, open_store, sqlite_url
from transport.config import BrokerConfig

MUST_HOLD = ("the rollout resumes where it was (no wave restarted) and SUCCEEDS; nothing installed twice; "
             "every command confirmed")
AGENTS, WAVES, KILLS_PER_ROUND = 4, 3, 4
PHASES = ("before the wave started", "deploys issued", "chunks streaming", "wave settled (observing, judging)")
STREAM_S = 2.0  # the plan's rate limit makes a wave's chunk stream last about this long
TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Snapshot:
    status: str
    wave: int
    started: datetime | None
    published: datetime | None
    settled: datetime | None

    @property
    def position(self) -> tuple[int, int]:
        """(wave, phase): how far the rollout is."""
        phase = 0 if self.started is None else 1 if self.published is None else 2 if self.settled is None else 3
        return self.wave, phase


def snapshot(sessions: sessionmaker[Session], rollout_id: str) -> Snapshot:
    with sessions() as session:
        r = session.get(Rollout, rollout_id)
        if r is None:
            raise LookupError(rollout_id)
        return Snapshot(r.status, r.wave, r.wave_started_at, r.chunks_published_at, r.wave_settled_at)


class Timeline:
    """The rollout's store state, sampled every 20 ms in a thread, to see whether a wave restarted."""

    def __init__(self, sessions: sessionmaker[Session], rollout_id: str) -> None:
        self.sessions, self.rollout_id = sessions, rollout_id
        self.samples: list[Snapshot] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="cloudkill-timeline")
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.samples.append(snapshot(self.sessions, self.rollout_id))

    def restarted(self) -> list[str]:
        """Every wave field that, once set, changed (reset or set again): a wave started over."""
        first: dict[tuple[int, str], datetime] = {}
        wrong, highest = [], 0
        for sample in self.samples:
            if sample.wave < highest:
                wrong.append(f"the wave index went back from {highest + 1} to {sample.wave + 1}")
            highest = max(highest, sample.wave)
            for name in ("started", "published", "settled"):
                value, key = getattr(sample, name), (sample.wave, name)
                if key in first and value != first[key]:
                    wrong.append(f"wave {sample.wave + 1} {name} changed from {first[key]:%T.%f} to "
                                 f"{value and f'{value:%T.%f}'} (started over)")
                elif value is not None:
                    first.setdefault(key, value)
        return wrong[:5]


def run(world: World, kills: int, seed: int, folder: Path, row: Row) -> None:
    rng = random.Random(seed)
    reached: dict[str, int] = {}
    for number in range(-(-kills // KILLS_PER_ROUND)):
        count = min(KILLS_PER_ROUND, kills - number * KILLS_PER_ROUND)
        slots = [divmod(s, len(PHASES)) for s in sorted(rng.sample(range(WAVES * len(PHASES)), count))]
        _round(world, number, slots, rng, folder / f"round-{number + 1}", row, reached)
    row.notes.append("controller: kills by (wave, phase) reached: " + ", ".join(
        f"{k} {v}" for k, v in sorted(reached.items())))


def _round(world: World, number: int, slots: list[tuple[int, int]], rng: random.Random, work: Path, row: Row,
           reached: dict[str, int]) -> None:
    where = f"controller round {number + 1}"
    work.mkdir(parents=True)
    broker = Restartable(work).start()
    store = sqlite_url(work / "cloud.db")
    sessions = open_store(store)
    ingest = CloudProcess("ingest", store, broker.url, work, f"ck{number}-ingest")
    controller = CloudProcess("controller", store, broker.url, work, f"ck{number}-controller",
                              key=world.public_key.with_suffix(".key"))
    config = BrokerConfig(url=broker.url, protocol="5", reconnect_min_s=0.5, reconnect_max_s=2)
    fleet = simulated_agents(AGENTS, config, work / "devices", [world.public_key], ["lab"], None,
                             prefix=f"ck{number}", telemetry_window_s=1, probation=NO_FRAMES)
    stop, threads = threading.Event(), []
    timeline: Timeline | None = None
    started = time.monotonic()
    try:
        ingest.start()
        stop, threads = start_agents(fleet)
        controller.start()
        if not _until(lambda: _online(sessions) == AGENTS, 60):
            row.violated(where, "not every device came online")
            return
        bundle = world.bundles[5]
        with sessions.begin() as session:
            sha = add_bundle(session, bundle.tarball, world.trust).sha256
        plan = RolloutPlan(waves="1,50%,100%", probation_s=1, chunk_size=8 * 1024,  # type: ignore[arg-type]
                           bytes_per_s=bundle.tarball.stat().st_size / STREAM_S,
                           gates=Gates(min_inferences=0, max_error_rate=None, max_latency_ratio=None,
                                       max_prediction_drift=None),
                           timeouts=Timeouts(ack_s=5, wave_s=TIMEOUT_S, observe_s=1.5))
        rollout = rollouts.start(sessions, sha, plan, f"ck{number}")
        timeline = Timeline(sessions, rollout)
        for wave, phase in slots:
            if not _until(lambda: (s := snapshot(sessions, rollout)).position >= (wave, phase) or  # noqa: B023
                          s.status in rollouts.FINISHED, TIMEOUT_S):
                row.violated(where, f"wave {wave + 1} never reached '{PHASES[phase]}'")
                return
            time.sleep(rng.uniform(0, STREAM_S * 0.8 if phase == 2 else 0.2))  # the kill's moment, varied
            at = snapshot(sessions, rollout)
            controller.kill()
            label = "finished" if at.status in rollouts.FINISHED else f"wave {at.wave + 1}: {PHASES[at.position[1]]}"
            reached[label] = reached.get(label, 0) + 1
            controller.start()
        if not _until(lambda: snapshot(sessions, rollout).status in rollouts.FINISHED, TIMEOUT_S):
            row.violated(where, f"the rollout did not finish within {TIMEOUT_S:.0f} s "
                                f"(at {snapshot(sessions, rollout)})")
            return
        row.violated(where, timeline.restarted())
        _check(sessions, fleet, rollout, sha, where, row)
        row.notes.append(f"{where}: {len(slots)} kills, rollout start -> {snapshot(sessions, rollout).status} "
                         f"in {time.monotonic() - started:.0f} s")
    finally:
        if timeline is not None:
            timeline.stop.set()
            timeline.thread.join(timeout=5)
        controller.stop()
        stop_agents(fleet, stop, threads)
        ingest.stop()
        broker.stop()
        sessions.kw["bind"].dispose()


def _check(sessions: sessionmaker[Session], fleet: list[Agent], rollout: str, sha: str, where: str,
           row: Row) -> None:
    with sessions() as session:
        check_succeeded(session, rollout, where, row)
        entries = session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout)).all()
        commands = session.scalars(select(CommandRow).where(CommandRow.rollout_id == rollout)).all()
        for entry in entries:
            deploys = [c for c in commands if c.device_id == entry.device_id and c.kind == "deploy"]
            if [c.job_id for c in deploys] != [entry.job_id]:
                row.violated(where, f"{entry.device_id}: deploys {[c.job_id for c in deploys]}, job {entry.job_id}")
        for command in commands:
            if not command.done or command.outcome != "confirmed":
                row.violated(where, f"{command.kind} {command.job_id} not confirmed: {command.outcome} "
                                    f"{command.reason or ''}")
    check_agents(fleet, rollout, sha, where, row)


def _until(done: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _online(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(Device.id).where(Device.online.is_(True))).all())
