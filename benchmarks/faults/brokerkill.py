"""Row: the broker killed and restarted mid-rollout. Each round, a real cloud (``cloud.service.Cloud``,
SQLite) rolls bundle 5 out in one wave to a few simulated agents (``agent.simulate``) through a
Mosquitto with persistence (saved every second). Mosquitto is SIGKILLed, kept down for
``DOWN_S`` and started again on the same port, at a moment that differs from round to round: right
after the rollout was written (the controller publishes its deploys while the broker is away),
right after the controller started the wave (deploys and their acknowledgements in flight), or
later into the chunk stream and the jobs.

Must hold: the rollout completes (SUCCEEDED); 0 commands lost: every device got its deploy and
ended SUCCEEDED on the new bundle, which it runs; nothing installed twice (one QUEUED and one
VERIFYING in each device's own job history)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.loop import Agent
from agent.simulate import simulated_agents
from benchmarks.faults.broker import Restartable
from benchmarks.faults.device import NO_FRAMES
from benchmarks.faults.report import Row
from benchmarks.faults.world import World
from cloud import rollouts
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.service import Cloud
from cloud.store import CommandRow, Device, sqlite_url
from transport.client import MqttTransport
from transport.config import BrokerConfig

FAULT = "broker killed and restarted mid-rollout"
MUST_HOLD = "rollout completes; 0 commands lost (every device SUCCEEDED on the new bundle); nothing installed twice"
DELAYS_S = (None, 0.0, 0.3, 1.0, 2.0)  # after the wave started, by round (None: before it starts)
DOWN_S = 1.0
TIMEOUT_S = 180.0


def run(world: World, rounds: int, agents: int, workdir: Path) -> Row:
    row = Row(FAULT, MUST_HOLD)
    sends: Counter[str] = Counter()
    with row.timed():
        for index in range(rounds):
            delay = DELAYS_S[index % len(DELAYS_S)]
            _round(world, index, agents, delay, workdir / f"brokerkill-{index}", row, sends)
    row.how_often = f"{rounds} kills (SIGKILL), {agents} devices each"
    row.notes.append(f"deploy commands: {sends['deploys']} for {sends['devices']} devices "
                     f"({sends['after']} sent only once the broker was back, {sends['resent']} re-sent), "
                     f"{sends['acked']} acknowledged by the broker; "
                     f"rollout start -> SUCCEEDED {sends['seconds'] / max(rounds, 1):.1f} s on average")
    return row


def _round(world: World, index: int, count: int, delay: float, work: Path, row: Row, sends: Counter[str]) -> None:
    when = "before the wave started" if delay is None else f"{delay:g} s after the wave started"
    where = f"round {index + 1} (kill {when})"
    work.mkdir(parents=True, exist_ok=True)
    broker = Restartable(work).start()
    config = BrokerConfig(url=broker.url, protocol="5", reconnect_min_s=0.5, reconnect_max_s=2)
    fleet = simulated_agents(count, config, work / "devices", [world.public_key], ["lab"], None,
                             prefix=f"k{index}", telemetry_window_s=1, probation=NO_FRAMES)
    stop, threads = start_agents(fleet)
    cloud = Cloud(sqlite_url(work / "cloud.db"), config, world.trusted_key, client_id=f"cloud-{index}").start()
    try:
        _until(lambda: _online(cloud) == count, 60, f"{where}: every device online")
        with cloud.sessions.begin() as session:
            sha = add_bundle(session, world.bundles[5].tarball, world.trust).sha256
        plan = RolloutPlan(waves="100%", probation_s=1, chunk_size=16 * 1024,  # type: ignore[arg-type]
                           gates=Gates(min_inferences=0, max_error_rate=None, max_latency_ratio=None,
                                       max_prediction_drift=None),
                           timeouts=Timeouts(ack_s=3, wave_s=TIMEOUT_S, observe_s=0))
        started = time.monotonic()
        rollout = rollouts.start(cloud.sessions, sha, plan, f"kill{index}")
        if delay is not None:
            _until(lambda: _wave_started(cloud, rollout), 30, f"{where}: the wave to start")
            time.sleep(delay)  # the moment of the kill, varied by round (a fault's timing, not a wait for a result)
        broker.kill()
        killed = datetime.now(UTC)
        time.sleep(DOWN_S)  # the controller steps (and publishes) while the broker is away
        broker.start()
        if not _until(lambda: _status(cloud, rollout) in rollouts.FINISHED, TIMEOUT_S, where, row):
            return
        sends["seconds"] += int(time.monotonic() - started)
        _check(cloud, fleet, rollout, sha, where, row, sends, killed)
    finally:
        cloud.stop()
        stop_agents(fleet, stop, threads)
        broker.stop()


def start_agents(fleet: list[Agent]) -> tuple[threading.Event, list[threading.Thread]]:
    """Every agent's loop in a thread of its own, until the event is set."""
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True, name=a.config.device_id)
               for a in fleet]
    for thread in threads:
        thread.start()
    return stop, threads


def stop_agents(fleet: list[Agent], stop: threading.Event, threads: list[threading.Thread]) -> None:
    """Stop the agents' loops and the network loop they share."""
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    transport = fleet[0].transport if fleet else None
    if isinstance(transport, MqttTransport) and transport.loop is not None:
        transport.loop.stop()


def _check(cloud: Cloud, fleet: list[Agent], rollout: str, sha: str, where: str, row: Row,
           sends: Counter[str], killed: datetime) -> None:
    with cloud.sessions() as session:
        check_succeeded(session, rollout, where, row)
        commands = session.scalars(select(CommandRow).where(CommandRow.rollout_id == rollout,
                                                            CommandRow.kind == "deploy")).all()
        sends["devices"] += len(commands)
        sends["deploys"] += sum(c.attempts for c in commands)
        sends["resent"] += sum(max(0, c.attempts - 1) for c in commands)
        sends["after"] += sum(1 for c in commands if c.attempts == 1 and c.sent_at and c.sent_at > killed)
        sends["acked"] += sum(min(c.acks, c.attempts) for c in commands)
    check_agents(fleet, rollout, sha, where, row)


def check_succeeded(session: Session, rollout: str, where: str, row: Row) -> None:
    """The rollout and each of its devices ended SUCCEEDED."""
    view = rollouts.view(session, rollout)
    if view.rollout.status != rollouts.SUCCEEDED:
        row.violated(where, f"rollout ended {view.rollout.status}: {view.rollout.reason}")
    for device in view.devices:
        if device.state != "SUCCEEDED":
            row.violated(where, f"{device.device_id} ended {device.state}: {device.reason}")


def check_agents(fleet: list[Agent], rollout: str, sha: str, where: str, row: Row) -> None:
    """Each agent got its deploy of ``rollout``, installed it once, and runs ``sha``, SUCCEEDED."""
    for agent in fleet:
        device = agent.config.device_id
        record = agent.deployer.jobs.get(f"{rollout}.{device}")
        if record is None:
            row.violated(where, f"{device} never got its deploy (command lost)")
            continue
        history = [h[0] for h in record.history]
        if history.count("QUEUED") != 1 or history.count("VERIFYING") != 1:
            row.violated(where, f"{device} installed more than once: {history}")
        active = agent.deployer.slots.pointer().active_sha256
        if active != sha or record.state.value != "SUCCEEDED":
            row.violated(where, f"{device} runs {active and active[:12]}, job {record.state.value}: {record.reason}")


def _until(done: object, timeout: float, what: str, row: Row | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            if row is None:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            row.violated(what, f"the rollout did not finish within {timeout:.0f} s")
            return False
        time.sleep(0.1)
    return True


def _online(cloud: Cloud) -> int:
    with cloud.sessions() as session:
        return len(session.scalars(select(Device.id).where(Device.online.is_(True))).all())


def _wave_started(cloud: Cloud, rollout: str) -> bool:
    with cloud.sessions() as session:
        return rollouts.view(session, rollout).rollout.wave_started_at is not None


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        return rollouts.view(session, rollout).rollout.status
