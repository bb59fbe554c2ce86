"""End to end through Mosquitto (MQTT v5): the cloud rolls the healthy bundle out to 24 simulated
agents in two groups, wave by wave behind gates, then a faulty bundle that fails its
prediction-drift gate and is rolled back on every device it touched. The controller is killed
mid-rollout and a new one continues; no device installs anything twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.simulate import simulated_agents
from cloud.fleet import add_bundle, tag
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.rollouts import ROLLED_BACK, SUCCEEDED, view
from cloud.rollouts import start as start_rollout
from cloud.service import Cloud
from cloud.store import Device, EventRow, Rollout, RolloutDevice, sqlite_url
from compiler.bundle import Bundle
from contract.jobs import JobState
from examples.fridge.synth import write_dataset
from tests.waiting import until
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
AGENTS = 24


def wait(predicate: Callable[[], bool], timeout: float, what: str, cloud: Cloud | None = None) -> None:
    until(predicate, what, timeout, detail=lambda: _dump(cloud))


def _dump(cloud: Cloud | None) -> str:
    if cloud is None:
        return ""
    lines = []
    with cloud.sessions() as session:
        for rollout in session.scalars(select(Rollout)).all():
            v = view(session, rollout.id)
            lines.append(f"{rollout.id} {rollout.status} wave={rollout.wave} started={rollout.wave_started_at} "
                         f"chunks={rollout.chunks_published_at} settled={rollout.wave_settled_at} {rollout.reason} "
                         f"{rollout.gate_results}")
            lines += [f"  {d.device_id} w{d.wave} {d.state} {d.reason} activated={d.activated}" for d in v.devices]
    return "\n".join(lines)


def plan(groups: list[str]) -> RolloutPlan:
    """Short timeouts; input drift at 0.5 since the test bundles' reference profile has only 30 photos."""
    return RolloutPlan(selector=Selector(groups=groups), waves="1,25%,100%", probation_s=2.0,  # type: ignore[arg-type]
                       gates=Gates(min_inferences=10, max_input_drift=0.5),
                       timeouts=Timeouts(ack_s=3, wave_s=60, observe_s=2.5), chunk_size=32 * 1024)


def test_waves_gates_restart_and_automatic_rollback(mosquitto_url: str, tmp_path: Path, world: dict[str, object],
                                                    faulty_bundle: Bundle) -> None:
    root: Path = world["root"]  # type: ignore[assignment]
    write_dataset(tmp_path / "frames", 80, seed=9)
    broker = BrokerConfig(url=mosquitto_url, protocol="5", reconnect_min_s=1)
    agents = [*simulated_agents(AGENTS // 2, broker, tmp_path / "devices", [root / "keys" / "ops.pub"], ["eu"],
                                tmp_path / "frames", prefix="eu", inference_interval_s=0.2, telemetry_window_s=1),
              *simulated_agents(AGENTS // 2, broker, tmp_path / "devices", [root / "keys" / "ops.pub"], ["us"],
                                tmp_path / "frames", prefix="us", inference_interval_s=0.2, telemetry_window_s=1)]
    stop_agents = threading.Event()
    threads = [threading.Thread(target=a.run, kwargs={"stop": stop_agents}, daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    store = sqlite_url(tmp_path / "cloud.db")
    key = world["trusted_key"]
    cloud = Cloud(store, broker, key, client_id="cloud-1").start()  # type: ignore[arg-type]
    try:
        sessions = cloud.sessions
        wait(lambda: _count(cloud, Device.online.is_(True)) == AGENTS, 60, "every agent's retained state")
        with sessions.begin() as session:
            good = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
            bad = add_bundle(session, faulty_bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
            tag(session, [f"eu-{i:04d}" for i in range(3)], {"ring": "canary"})

        # ---- v1 to both groups; the controller is killed during wave 2 and replaced -------------
        rollout = start_rollout(sessions, good[:12], plan(["eu", "us"]), "r-good")
        wait(lambda: _wave(cloud, "r-good") >= 1 and _sent(cloud, "r-good", 1), 90, "wave 2 to start", cloud)
        cloud.stop()  # killed mid-rollout: nothing in memory survives
        cloud = Cloud(store, broker, key, client_id="cloud-1").start()  # type: ignore[arg-type]
        sessions = cloud.sessions
        wait(lambda: _status(cloud, rollout) in (SUCCEEDED, ROLLED_BACK), 240, "the healthy rollout to finish", cloud)
        with sessions() as session:
            v = view(session, rollout)
            assert v.rollout.status == SUCCEEDED, v.rollout.reason
            assert {d.state for d in v.devices} == {JobState.SUCCEEDED.value}
            # wave k+1 got its deploy only after wave k's gates passed (gate results stored per wave)
            passed_at = [r["wave"] for r in v.rollout.gate_results]
            assert passed_at == [0, 1, 2]
            first = {w: min(d.deploy_sent_at for d in v.devices if d.wave == w) for w in range(3)}  # type: ignore[type-var]
            last_done = {w: max(d.updated_at for d in v.devices if d.wave == w) for w in range(3)}
            assert first[1] >= last_done[0] and first[2] >= last_done[1]
            # nothing installed twice: one DOWNLOADING and one SUCCEEDED event per device and job
            downloads = session.scalars(select(EventRow.device_id).where(
                EventRow.job_id.like("r-good.%"), EventRow.state == "VERIFYING")).all()
            assert sorted(downloads) == sorted(a.config.device_id for a in agents)
        wait(lambda: all(a.bundle_ref() is not None and a.bundle_ref().sha256 == good for a in agents), 30,  # type: ignore[union-attr]
             "every agent to run v1")

        # ---- the faulty v2 to the eu group: fails its drift gate and is rolled back everywhere -----
        faulty = start_rollout(sessions, bad, plan(["eu"]), "r-faulty")
        wait(lambda: _status(cloud, faulty) == ROLLED_BACK, 180, "the faulty rollout to be rolled back", cloud)
        with sessions() as session:
            v = view(session, faulty)
            assert "prediction_drift" in (v.rollout.reason or ""), _dump(cloud)
            touched = [d for d in v.devices if d.activated]
            assert touched and all(d.rolled_back for d in touched)
            assert all(d.state == "SKIPPED" for d in v.devices if d.wave > 0)  # later waves never deployed
            states = session.scalars(select(RolloutDevice.state).where(RolloutDevice.rollout_id == faulty)).all()
            assert "PENDING" not in states
        wait(lambda: all(a.bundle_ref().sha256 == good for a in agents), 30, "every agent back on v1")  # type: ignore[union-attr]
    finally:
        cloud.stop()
        stop_agents.set()
        for thread in threads:
            thread.join(timeout=20)


def _count(cloud: Cloud, *where: object) -> int:
    with cloud.sessions() as session:
        return len(session.scalars(select(Device).where(*where)).all())  # type: ignore[arg-type]


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.status


def _wave(cloud: Cloud, rollout: str) -> int:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.wave


def _sent(cloud: Cloud, rollout: str, wave: int) -> bool:
    with cloud.sessions() as session:
        return any(d.deploy_sent_at is not None for d in view(session, rollout).devices if d.wave == wave)
