"""Row: a device partitioned from the broker for 10 minutes; duplicated and reordered deliveries.

Each round, the real cloud parts (``cloud.controller.Controller`` with its outbox, the
``IngestWorker``, the ``Publisher``, a SQLite store) roll bundle 6 out in one wave to a few real
agents (``agent.loop.Agent``: real downloads, verification, install, self-test, probation, spool
and uplink) that run bundle 5. The broker between them is simulated (``benchmarks.faults.network``:
persistent QoS 1 sessions, last wills, retained state), so that one device can be cut off for 10
minutes of an injected clock that the controller, publisher, agents and uplinks all read; the
brokerkill and burst rows cover the real Mosquitto. The cut starts, by round: before the deploy
reaches the device, in the middle of its chunk download, or during its probation; the device
notices after a keepalive (its publishes until then are re-sent after the heal), the broker keeps
its session (the controller's re-sends and the chunks wait there). After the heal, for
``CHAOS_S``, everything to and from that device is duplicated (2-3 copies) and reordered (held
back behind newer messages), on top of MQTT's own re-delivery of what was unacknowledged at the cut.

The wave's timeout is, by round, longer than the partition (``wave_s`` 1800 s) or shorter (300 s).
Must hold, per round, once the rollout has finished and the network is quiet again:

- the job ends correctly: if the wave outlasts the partition (the deploy is re-sent until the
  wave's timeout, so a device cut off before it gets it after the heal), the rollout SUCCEEDED and
  every device runs bundle 6 with its job SUCCEEDED; otherwise (the wave timed out) the rollout did
  not succeed, the partitioned device's outcome is not SUCCEEDED,
  and no device is left running bundle 6 (a halted rollout rolls back every device it touched);
- both sides agree: for every device, the bundle the cloud believes it runs is the one it runs,
  and a rollout SUCCEEDED means each of its devices' jobs SUCCEEDED on the device;
- nothing installed twice, no command acted on twice: no state appears twice in any job's history
  on a device, and the store holds at most one VERIFYING and one INSTALLING event per job;
- 0 telemetry windows lost or duplicated: every window each device closed is in the store exactly
  once (its spool is empty: the cloud confirmed every one)."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from agent.loop import Agent
from benchmarks.faults.device import agent_config, known_good_template
from benchmarks.faults.network import Link, Network, SimClock
from benchmarks.faults.report import Row
from benchmarks.faults.world import World
from cloud import rollouts
from cloud.commands import Deliveries
from cloud.controller import Controller
from cloud.fleet import add_bundle
from cloud.ingest import IngestWorker
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.publisher import Publisher
from cloud.store import Device, EventRow, RolloutDevice, TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.errors import ContractError
from contract.jobs import JobState
from contract.state import offline

FAULT = "device partitioned from the broker for 10 min (injected clock, simulated broker); dup + reorder"
MUST_HOLD = ("job ends correctly (SUCCEEDED if the wave outlasts the partition, else not, and no device left on "
             "the halted bundle); cloud and device agree on the active bundle; nothing installed or acted on twice; "
             "0 telemetry windows lost or duplicated")
PARTITION_S = 600.0
CHAOS_S = 120.0  # after the heal: duplicated and reordered deliveries to and from the device
TICK_S = 1.0  # simulated seconds per turn of the harness
WINDOW_S = 10.0  # telemetry window
REPAIR_S = 10.0  # a device asks for missing chunks this often
SETTLE_S = 240.0  # after the heal (and the rollout's end), the quiet the checks wait for
GIVE_UP_S = 3 * 3600.0  # simulated seconds after the rollout started: a round not settled by then breaks
WHEN = ("before the deploy", "during the download", "during probation")
WAVE_S = (1800.0, 300.0)  # longer than the partition, shorter


@dataclass
class Round:
    index: int
    when: str
    wave_s: float
    rng: random.Random
    clock: SimClock
    network: Network
    agents: dict[str, Agent] = field(default_factory=dict)
    windows: Counter[str] = field(default_factory=Counter)  # windows each device closed
    cut_at: float | None = None
    healed_at: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"round {self.index + 1} (cut {self.when}, wave timeout {self.wave_s:g} s)"


def run(world: World, rounds: int, devices: int, seed: int, workdir: Path) -> Row:
    row = Row(FAULT, MUST_HOLD)
    totals: Counter[str] = Counter()
    with row.timed():
        for index in range(rounds):
            when, wave_s = WHEN[index % len(WHEN)], WAVE_S[index % len(WAVE_S)]  # every pair in 6 rounds
            _round(world, index, when, wave_s, devices, random.Random(seed * 1000 + index),
                   workdir / f"partition-{index}", row, totals)
    row.how_often = f"{rounds} partitions of {PARTITION_S / 60:g} min, {devices} devices each"
    row.notes.append(
        f"simulated broker on an injected clock; {totals['simulated_s'] / 3600:.1f} simulated hours; deliveries "
        f"{totals['delivered']}, duplicated {totals['duplicated']}, held back (reordered) {totals['reordered']}, "
        f"re-delivered after a cut {totals['redelivered after the cut']}, re-sent by a device after a heal "
        f"{totals['re-sent by the client after the cut']}; commands delivered {totals['command deliveries']} times "
        f"for {totals['commands']} commands; windows {totals['windows']} stored once each "
        f"({totals['duplicate windows']} duplicate deliveries ignored); outcomes: "
        + ", ".join(f"{n} x {o}" for o, n in sorted(totals.items()) if o.startswith("rollout ")))
    return row


def _round(world: World, index: int, when: str, wave_s: float, count: int, rng: random.Random, work: Path,
           row: Row, totals: Counter[str]) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clock = SimClock(1_800_000_000.0 + index * 100_000)
    state = Round(index, when, wave_s, rng, clock, Network(clock, rng, dup=rng.uniform(0.3, 0.6),
                                                            reorder=rng.uniform(0.3, 0.6)))
    network = state.network
    sessions = open_store(sqlite_url(work / "cloud.db"))
    cloud_link = network.link("cloud")
    publisher = Publisher(cloud_link, lambda sha: world.bundles[6].tarball, clock=clock.time,
                          sleep=lambda s: None)
    deliveries = Deliveries()
    worker = IngestWorker(cloud_link, sessions, on_missing=publisher.repair, on_acked=deliveries.acked)
    controller = Controller(sessions, cloud_link, publisher, world.trusted_key, clock=clock.datetime,
                            notify=lambda message: None, deliveries=deliveries)
    template = known_good_template(world, work / "template", sequence=5)
    for i in range(count):
        device = f"p{index}-{i}"
        shutil.copytree(template, work / device)
        link = network.link(device, will=(topics.state(device), offline(device).to_json()))
        config = agent_config(world, work / device, device, telemetry_window_s=WINDOW_S,
                              probation={"max_s": 60})  # no frames, no live evidence: it ends, explicitly, at 60 s
        agent = Agent(config, link, None, clock=clock.time)
        agent.uplink.clock = clock.time  # re-sends of unconfirmed windows on the simulated clock too
        state.agents[device] = agent
        agent.deployer.resume()
        link.start()
    cloud_link.start()
    victim = f"p{index}-0"

    def turn() -> None:
        _turn(state, worker, controller, publisher)

    for _ in range(int(30 / TICK_S)):  # the fleet comes online and sends telemetry
        turn()
    with sessions.begin() as session:
        sha = add_bundle(session, world.bundles[6].tarball, world.trust).sha256
    plan = RolloutPlan(waves="100%", probation_s=60, chunk_size=16 * 1024,  # type: ignore[arg-type]
                       gates=Gates(min_inferences=0, max_error_rate=None, max_latency_ratio=None,
                                   max_prediction_drift=None),
                       timeouts=Timeouts(ack_s=10, wave_s=wave_s, observe_s=0, rollback_s=300))
    rollout = rollouts.start(sessions, sha, plan, f"part{index}", clock=clock.datetime())

    def cut() -> None:
        if state.cut_at is None:
            state.cut_at = clock.time()
            network.cut(victim, detect_s=rng.uniform(20, 90))
            network.at(clock.time() + PARTITION_S, "heal", heal)

    def heal() -> None:
        state.healed_at = clock.time()
        network.heal(victim, CHAOS_S)

    if when == WHEN[0]:
        cut()
    elif when == WHEN[1]:
        chunks = rng.randint(2, 12)  # of 18: the cut falls in the middle of the download
        network.watch = lambda client, message: cut() if client == victim and _is_chunk(message.topic) and \
            _chunks(network, victim) >= chunks else None
    trigger: Callable[[], bool] = (lambda: _job_state(state.agents[victim], rollout) is JobState.PROBATION) \
        if when == WHEN[2] else (lambda: False)
    started = clock.time()
    while True:
        turn()
        if state.cut_at is None and trigger():
            cut()
        if state.healed_at is not None and clock.time() - state.healed_at >= SETTLE_S and _finished(
                sessions, rollout) and network.idle() and all(a.spool.size == 0 for a in state.agents.values()):
            break
        if clock.time() - started > GIVE_UP_S:
            row.violated(state.where, f"not settled {GIVE_UP_S:g} simulated s after the rollout started "
                                      f"(rollout {_status(sessions, rollout)}, cut at {state.cut_at}, healed at "
                                      f"{state.healed_at})")
            break
    totals["simulated_s"] += int(clock.time() - 1_800_000_000.0 - index * 100_000)
    totals.update(network.counts)
    totals["duplicate windows"] += worker.counts["duplicate"]
    _check(state, sessions, rollout, sha, victim, row, totals)
    for agent in state.agents.values():
        agent.spool.close()
    sessions.kw["bind"].dispose()


def _turn(state: Round, worker: IngestWorker, controller: Controller, publisher: Publisher) -> None:
    """One simulated tick: deliveries, every agent's turn, the cloud's turn, then the clock moves."""
    network, clock = state.network, state.clock
    network.flush()
    for device, agent in state.agents.items():
        link = agent.transport
        assert isinstance(link, Link)
        while not link.inbox.empty():
            try:
                agent.handle(link.inbox.get_nowait())
            except ContractError as exc:  # what the agent's loop would count and report, never a crash
                state.problems.append(f"{device}: {exc}")
        if int(clock.time()) % int(WINDOW_S) == 0:
            agent.close_window()
            state.windows[device] += 1
        if int(clock.time()) % int(REPAIR_S) == 0 and agent.connected:
            agent.request_missing(quiet_s=0, stall_s=0)
        agent.publish_pending()
    network.flush()
    while not worker.transport.inbox.empty():
        worker.drain(timeout=0)
    controller.step()
    while not publisher.idle():  # the wave's chunk stream (a thread) goes out before the clock moves on
        time.sleep(0.001)
    clock.advance(TICK_S)
    network.timers()


def _is_chunk(topic: str) -> bool:
    try:
        return topics.parse(topic).kind in (topics.TopicKind.GROUP_CHUNKS, topics.TopicKind.DEVICE_CHUNKS)
    except ContractError:
        return False


def _chunks(network: Network, client: str) -> int:
    return sum(n for (c, topic), n in network.delivered.items() if c == client and _is_chunk(topic))


def _job_state(agent: Agent, rollout: str) -> JobState | None:
    record = agent.deployer.jobs.get(f"{rollout}.{agent.config.device_id}")
    return None if record is None else record.state


def _status(sessions: object, rollout: str) -> str:
    with sessions() as session:  # type: ignore[operator]
        return str(rollouts.view(session, rollout).rollout.status)


def _finished(sessions: object, rollout: str) -> bool:
    return _status(sessions, rollout) in rollouts.FINISHED


def _check(state: Round, sessions: object, rollout: str, sha: str, victim: str, row: Row,
           totals: Counter[str]) -> None:
    where, problems = state.where, list(state.problems)
    expect_success = state.wave_s > PARTITION_S
    with sessions() as session:  # type: ignore[operator]
        view = rollouts.view(session, rollout)
        status = view.rollout.status
        totals[f"rollout {status}"] += 1
        entries = {d.device_id: d for d in session.scalars(select(RolloutDevice).where(
            RolloutDevice.rollout_id == rollout)).all()}
        believed = {d.id: d.active_sha256 for d in session.scalars(select(Device)).all()}
        installs = session.execute(select(EventRow.job_id, EventRow.state, func.count()).where(
            EventRow.state.in_(["VERIFYING", "INSTALLING"])).group_by(EventRow.job_id, EventRow.state)).all()
        stored = {device: (sorted(s for (s,) in session.execute(select(TelemetryRow.seq).where(
            TelemetryRow.device_id == device, TelemetryRow.epoch == agent.spool.epoch)).all()))
            for device, agent in state.agents.items()}
    if expect_success and status != rollouts.SUCCEEDED:
        problems.append(f"the partition was shorter than the wave timeout but the rollout ended {status}: "
                        f"{view.rollout.reason}")
    if not expect_success and status == rollouts.SUCCEEDED:
        problems.append("the rollout SUCCEEDED although its device could not finish within the timeouts")
    if not expect_success and entries[victim].state == "SUCCEEDED":
        problems.append(f"{victim}'s job is SUCCEEDED in the store although the rollout was halted")
    problems += [f"job {job} has {n} {what} events in the store (installed twice?)" for job, what, n in installs
                 if n > 1]
    for device, agent in state.agents.items():
        active = agent.deployer.slots.pointer().active_sha256
        record = agent.deployer.jobs.get(f"{rollout}.{device}")
        if believed.get(device) != active:
            problems.append(f"{device} runs {_short(active)}, the cloud believes {_short(believed.get(device))}")
        if status == rollouts.SUCCEEDED and (active != sha or record is None or record.state is not JobState.SUCCEEDED):
            problems.append(f"rollout SUCCEEDED but {device} runs {_short(active)}, its job "
                            f"{record and record.state.value}")
        if status != rollouts.SUCCEEDED and active == sha:
            problems.append(f"the rollout ended {status} but {device} still runs its bundle "
                            f"(store: {entries[device].state}, {entries[device].reason})")
        for job in agent.deployer.jobs.all():
            states = [h[0] for h in job.history]
            repeated = sorted(s for s, n in Counter(states).items() if n > 1)
            if repeated:
                problems.append(f"{device}: job {job.job_id} went through {', '.join(repeated)} twice: {states}")
        expected = list(range(1, state.windows[device] + 1))
        if stored[device] != expected or agent.spool.size:
            missing = sorted(set(expected) - set(stored[device]))
            problems.append(f"{device}: {len(missing)} windows missing from the store ({missing[:5]}), "
                            f"{len(stored[device]) - len(set(stored[device]))} duplicated, "
                            f"{agent.spool.size} still spooled")
        totals["windows"] += len(stored[device])
    totals["command deliveries"] += sum(state.network.commands.values())
    totals["commands"] += len(state.network.commands)
    if problems:
        row.violated(where, problems)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "nothing"
