"""Key rotation on a running fleet (issue 13): 20 simulated agents provisioned with a root-signed
trust document, the real cloud and Mosquitto (MQTT v5). The operator key is replaced in the field:
a trust document adding a new operator key and revoking the old one, signed by the offline root,
is pushed to every device; a rollout and its rollback signed with the new key then succeed on all
20, and a rollback signed by the revoked key is refused by all 20 with the reason."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.simulate import simulated_agents
from benchmarks.faults.world import signed_rollback
from cloud import trust as cloud_trust
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.rollouts import ROLLED_BACK, SUCCEEDED, rollback, view
from cloud.rollouts import start as start_rollout
from cloud.service import Cloud
from cloud.store import EventRow, Rollout, sqlite_url
from contract import signing, topics
from contract.signing import Role
from contract.trust import TrustDocument, TrustedKey, next_document, sign_trust
from examples.fridge.synth import write_dataset
from tests.integration.cloud_side import online
from tests.waiting import until
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
AGENTS = 20
# latency gate wide open: 20 agents share two busy cores here, and this test is about keys, not speed
PLAN = RolloutPlan(selector=Selector(groups=["rot"]), waves="100%", probation_s=2.0,  # type: ignore[arg-type]
                   gates=Gates(min_inferences=10, max_input_drift=0.5, max_latency_ratio=100),
                   timeouts=Timeouts(ack_s=3, wave_s=90, observe_s=1), chunk_size=32 * 1024)


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        row = session.get(Rollout, rollout)
        return row.status if row else "?"


def _rollout(cloud: Cloud, sha: str, name: str) -> None:
    start_rollout(cloud.sessions, sha, PLAN, name)
    until(lambda: _status(cloud, name) in (SUCCEEDED, ROLLED_BACK), f"rollout {name} to finish", 240)
    with cloud.sessions() as session:
        v = view(session, name)
        assert v.rollout.status == SUCCEEDED, v.rollout.reason
        assert len(v.devices) == AGENTS and {d.state for d in v.devices} == {"SUCCEEDED"}


def test_rotating_the_operator_key_on_a_running_fleet(mosquitto_url: str, tmp_path: Path,
                                                      world: dict[str, object]) -> None:
    root, old, new = (signing.generate_private_key() for _ in range(3))
    signer = world["trusted_key"]  # signed the demo bundles: the bundle-signer
    first = TrustDocument(version=1, keys=[TrustedKey.of(root.public_key(), Role.ROOT),
                                           TrustedKey.of(signer.public_key(), Role.BUNDLE_SIGNER),  # type: ignore[attr-defined]
                                           TrustedKey.of(old.public_key(), Role.OPERATOR)])
    seed = tmp_path / "trust.json"
    seed.write_bytes(sign_trust(first, [root]).to_json())
    write_dataset(tmp_path / "frames", 60, seed=9)
    broker = BrokerConfig(url=mosquitto_url, protocol="5", reconnect_min_s=1)
    agents = simulated_agents(AGENTS, broker, tmp_path / "devices", [], ["rot"], tmp_path / "frames",
                              prefix="rot", inference_interval_s=0.2, telemetry_window_s=1, trust_file=seed)
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, kwargs={"stop": stop}, daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    store = sqlite_url(tmp_path / "cloud.db")
    cloud = Cloud(store, broker, old, client_id="cloud-rot").start()
    try:
        until(lambda: online(cloud, "rot") == AGENTS, "every agent's retained state", 60)
        with cloud.sessions.begin() as session:
            five = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
            six = add_bundle(session, world["bundles"][6].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
        _rollout(cloud, five, "r5")

        # ---- the old operator key is compromised: root signs version 2 without it ------------------
        old_id = signing.key_id(old.public_key())
        second = sign_trust(next_document(first, [TrustedKey.of(new.public_key(), Role.OPERATOR)], [old_id]), [root])
        jobs = cloud_trust.push(cloud.sessions, second, Selector(groups=["rot"]))  # ours only; the outbox sends
        assert len(jobs) == AGENTS
        until(lambda: len(cloud_trust.results(cloud.sessions, jobs)) == AGENTS, "every device's answer", 60)
        answers = cloud_trust.results(cloud.sessions, jobs)
        assert {state for state, _ in answers.values()} == {"SUCCEEDED"}, answers
        assert {a.trust.version for a in agents} == {2}

        # ---- the cloud now signs with the new key: a rollout and its rollback succeed on all 20 -----
        cloud.stop()
        cloud = Cloud(store, broker, new, client_id="cloud-rot").start()
        _rollout(cloud, six, "r6")
        rollback(cloud.sessions, "r6", "rotation test")
        until(lambda: _status(cloud, "r6") == ROLLED_BACK, "the rollback signed by the new key", 120)
        until(lambda: all(a.bundle_ref() is not None and a.bundle_ref().sha256 == five for a in agents),  # type: ignore[union-attr]
              "every agent back on bundle 5", 30)

        # ---- a rollback signed by the revoked key: refused by every device, with the reason ---------
        to_six = world["bundles"][6].ref  # type: ignore[index]
        for a in agents:
            cloud.transport.publish(topics.commands(a.config.device_id), signed_rollback(old, "rb-revoked", to_six,
                                                                                   device=a.config.device_id))
        until(lambda: len(_refusals(cloud)) == AGENTS, "every device to refuse the revoked key", 60)
        assert all("revoked by trust document version 2" in m for m in _refusals(cloud).values())
        assert all(a.bundle_ref().sha256 == five for a in agents)  # type: ignore[union-attr]
        assert online(cloud, "rot") == AGENTS  # none lost
    finally:
        cloud.stop()
        stop.set()
        for thread in threads:
            thread.join(timeout=20)



def _refusals(cloud: Cloud) -> dict[str, str]:
    with cloud.sessions() as session:
        rows = session.scalars(select(EventRow).where(EventRow.type == "error")).all()
        return {r.device_id: r.reason or "" for r in rows
                if r.payload.get("code") == "command_refused.bad_signature" and "revoked" in (r.reason or "")}
