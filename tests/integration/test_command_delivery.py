"""Issue 12.4: a command counts as sent only when the broker acknowledged it. The broker is killed
(SIGKILL) before a rollout starts, so the controller's deploy finds it away; when it is back, the
deploy is re-sent, reaches the device, and the rollout succeeds with the bundle installed once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.simulate import simulated_agents
from benchmarks.faults.broker import Restartable
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.rollouts import FINISHED, SUCCEEDED, view
from cloud.rollouts import start as start_rollout
from cloud.service import Cloud
from cloud.store import EventRow, sqlite_url
from examples.fridge.synth import write_dataset
from tests.integration import mosquitto
from tests.integration.cloud_side import online
from tests.waiting import until
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration


def test_deploy_published_while_the_broker_is_away_is_resent_and_reaches_the_device(
        tmp_path: Path, world: dict[str, object]) -> None:
    mosquitto.binary()
    root: Path = world["root"]  # type: ignore[assignment]
    write_dataset(tmp_path / "frames", 20, seed=3)
    with Restartable(tmp_path) as broker:
        config = BrokerConfig(url=broker.url, protocol="5", reconnect_min_s=1, reconnect_max_s=2)
        agents = simulated_agents(2, config, tmp_path / "devices", [root / "keys" / "ops.pub"], ["eu"],
                                  tmp_path / "frames", prefix="away", inference_interval_s=0.2, telemetry_window_s=1)
        stop = threading.Event()
        threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True) for a in agents]
        for thread in threads:
            thread.start()
        cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), config, world["trusted_key"],  # type: ignore[arg-type]
                      client_id="cloud-away").start()
        try:
            sessions = cloud.sessions
            until(lambda: online(cloud, "away") == 2, "both devices' retained state", 60)
            with sessions.begin() as session:
                sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
            broker.kill()
            until(lambda: not cloud.transport.client.is_connected(), "the cloud to see the broker gone", 30)
            plan = RolloutPlan(waves="100%", probation_s=1.0, chunk_size=32 * 1024,  # type: ignore[arg-type]
                               gates=Gates(min_inferences=0, max_error_rate=None, max_latency_ratio=None,
                                           max_prediction_drift=None),
                               timeouts=Timeouts(ack_s=2, wave_s=45, observe_s=0))
            rollout = start_rollout(sessions, sha, plan, "r-away")
            until(lambda: _started(cloud, rollout), "the controller to start the wave while the broker is away", 30)
            broker.start()
            until(lambda: _status(cloud, rollout) in FINISHED, "the rollout to finish", 120)
            with sessions() as session:
                v = view(session, rollout)
                assert v.rollout.status == SUCCEEDED, (v.rollout.reason, [(d.device_id, d.state, d.reason)
                                                                           for d in v.devices])
                assert {d.state for d in v.devices} == {"SUCCEEDED"}
                verified = session.scalars(select(EventRow.device_id).where(
                    EventRow.job_id.like("r-away.%"), EventRow.state == "VERIFYING")).all()
                assert sorted(verified) == ["away-0000", "away-0001"]  # installed once each
            for agent in agents:
                record = agent.deployer.jobs.get(f"r-away.{agent.config.device_id}")
                assert record is not None and [h[0] for h in record.history].count("QUEUED") == 1
        finally:
            cloud.stop()
            stop.set()
            for thread in threads:
                thread.join(timeout=20)



def _started(cloud: Cloud, rollout: str) -> bool:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.wave_started_at is not None


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.status
