"""Two rollouts, then the older one rolled back (issue 11, finding 1, end to end through Mosquitto).

v4 then v5 reach every device; the faulty v7 fails its gate on the first wave and is rolled back
there (installed into the slot that held v4, so on those devices v4 is gone and v7 is bad). Rolling
back the v5 rollout must then send each device to *its own* last known-good bundle: v4 where it is
still on the device, and nowhere (keep v5, say why) where it is not; never the bad v7, never "no
model at all"; and the fleet view must say what the devices really run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.simulate import simulated_agents
from cloud import rollouts
from cloud.fleet import add_bundle
from cloud.plan import RolloutPlan
from cloud.rollouts import ROLLED_BACK, SUCCEEDED
from cloud.service import Cloud
from cloud.store import Alert, Device, RolloutDevice, sqlite_url
from compiler.bundle import Bundle
from contract.bundle import manifest_sha256
from examples.fridge.synth import write_dataset
from tests.integration.cloud_side import online
from tests.integration.test_rollout import _dump, _status, plan, wait
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
AGENTS = 4


def _one_wave(groups: list[str], waves: str = "100%") -> RolloutPlan:
    return plan(groups).model_copy(update={"waves": RolloutPlan.model_validate({"waves": waves}).waves})


def test_rolling_back_an_older_rollout_goes_to_each_devices_last_known_good(
        mosquitto_url: str, tmp_path: Path, world: dict[str, object], faulty_bundle: Bundle) -> None:
    root: Path = world["root"]  # type: ignore[assignment]
    write_dataset(tmp_path / "frames", 40, seed=11)
    broker = BrokerConfig(url=mosquitto_url, protocol="5", reconnect_min_s=1)
    agents = simulated_agents(AGENTS, broker, tmp_path / "devices", [root / "keys" / "ops.pub"], ["lab"],
                              tmp_path / "frames", prefix="lab", inference_interval_s=0.2, telemetry_window_s=1)
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    store = sqlite_url(tmp_path / "cloud.db")
    cloud = Cloud(store, broker, world["trusted_key"], client_id="cloud-rb").start()  # type: ignore[arg-type]
    bundles = world["bundles"]  # type: ignore[index]
    try:
        sessions = cloud.sessions
        wait(lambda: online(cloud, "lab") == AGENTS, 60, "every agent online")
        with sessions.begin() as session:
            shas = {seq: add_bundle(session, bundles[seq].tarball, world["trust"]).sha256  # type: ignore[arg-type]
                    for seq in (4, 5)}
            shas[7] = add_bundle(session, faulty_bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
        for seq in (4, 5):
            rollout = rollouts.start(sessions, shas[seq], _one_wave(["lab"]), f"r{seq}")
            wait(lambda rollout=rollout: _status(cloud, rollout) in (SUCCEEDED, ROLLED_BACK), 180,
                 f"rollout of v{seq}", cloud)
            assert _status(cloud, rollout) == SUCCEEDED, _dump(cloud)
        faulty = rollouts.start(sessions, shas[7], _one_wave(["lab"], "2,100%"), "r7")
        wait(lambda: _status(cloud, faulty) == ROLLED_BACK, 180, "the faulty rollout to be rolled back", cloud)
        with sessions() as session:
            touched = {d.device_id for d in session.scalars(select(RolloutDevice).where(
                RolloutDevice.rollout_id == "r7", RolloutDevice.activated.is_(True))).all()}
        assert 1 <= len(touched) <= 2, _dump(cloud)  # the first wave's devices that activated v7
        wait(lambda: all(a.bundle_ref() and a.bundle_ref().sha256 == shas[5] for a in agents), 60,  # type: ignore[union-attr]
             "every device back on v5")

        with sessions() as session:  # the plan the operator is shown, from what each device reported
            plan_rows = {step.device_id: step for step in rollouts.rollback_plan(session, "r5")}
        for device, step in plan_rows.items():
            if device in touched:
                assert step.action == "impossible", step  # v4 was overwritten by v7, and v7 is bad there
            else:
                assert step.action == "roll back" and step.to and step.to["sha256"] == shas[4], step
        rollouts.rollback(sessions, "r5", "operator: back to v4")
        wait(lambda: _status(cloud, "r5") == ROLLED_BACK, 120, "the v5 rollout to be rolled back", cloud)
        expected = {a.config.device_id: shas[5] if a.config.device_id in touched else shas[4] for a in agents}
        wait(lambda: {a.config.device_id: a.bundle_ref().sha256 for a in agents} == expected, 60,  # type: ignore[union-attr]
             "each device on its last known-good bundle", cloud)
        for a in agents:  # the device's own truth: what its pointer says is what its active slot holds
            pointer = a.deployer.slots.pointer()
            assert pointer.active is not None and shas[7] != pointer.active_sha256
            assert manifest_sha256(a.deployer.slots.path(pointer.active)) == pointer.active_sha256
        wait(lambda: _fleet(cloud, expected) == expected, 30, "the fleet view to show what the devices run", cloud)
        with sessions() as session:
            r5 = {d.device_id: d for d in session.scalars(select(RolloutDevice).where(
                RolloutDevice.rollout_id == "r5")).all()}
            assert all(r5[d].rolled_back for d in expected if d not in touched)
            assert all(not r5[d].rolled_back and "no known-good" in (r5[d].reason or "") for d in touched)
            alerts = session.scalars(select(Alert.subject).where(Alert.kind == "rollback_impossible")).all()
            assert set(alerts) == touched
    finally:
        cloud.stop()
        stop.set()
        for thread in threads:
            thread.join(timeout=20)



def _fleet(cloud: Cloud, devices: dict[str, str]) -> dict[str, str | None]:
    """What the store shows for these devices (the session's broker also holds other tests' devices)."""
    with cloud.sessions() as session:
        return {d.id: d.active_sha256 for d in session.scalars(select(Device).where(Device.id.in_(devices))).all()}
