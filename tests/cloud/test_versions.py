"""Fleets across versions, in the cloud (issue 13): what an agent of the commit before issue 13 sends
is still read (its version 1 state, as the golden example; its telemetry without an epoch), the
device's protocol is recorded, a rollout skips it with the reason or refuses when only such devices
are selected, and a store from before the columns gets them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import RolloutError
from cloud.ingest import ingest
from cloud.plan import RolloutPlan, Selector
from cloud.rollouts import start, view
from cloud.store import BundleRow, DeadLetter, Device, TelemetryRow, open_store, sqlite_url
from contract import topics
from contract.state import DeviceState
from contract.versions import AGENT_PROTOCOL, MIN_AGENT_PROTOCOL, STATE_SCHEMA_VERSION, STATE_VERSIONS, needs_new_agent

GOLDEN = Path(__file__).parents[1] / "contract" / "golden"


def _old_state(device: str) -> bytes:
    """What the af8e7d9 agent publishes: a version 1 state, no protocol (tests/contract/golden/state_v1.json)."""
    data = json.loads((GOLDEN / "state_v1.json").read_text())
    return json.dumps({**data, "device_id": device, "groups": ["eu"], "job": None, "active": None}).encode()


def _old_window(device: str, seq: int) -> bytes:
    """An af8e7d9 telemetry window: version 1, and (from an agent before spool epochs) no epoch."""
    data = json.loads((GOLDEN / "telemetry.json").read_text())
    data.pop("epoch", None)
    return json.dumps({**data, "device_id": device, "seq": seq}).encode()


def test_an_old_agents_state_and_telemetry_are_read_and_its_protocol_recorded(
        sessions: sessionmaker[Session]) -> None:
    new = DeviceState(device_id="new-1", online=True, board="rpi4", groups=["eu"]).to_json()
    future = json.dumps({**json.loads(new), "schema_version": STATE_SCHEMA_VERSION + 1}).encode()
    with sessions.begin() as session:
        assert ingest(session, topics.state("old-1"), _old_state("old-1")).kind == "stored"
        assert ingest(session, topics.telemetry("old-1"), _old_window("old-1", 1)).kind == "stored"
        assert ingest(session, topics.state("new-1"), new).kind == "stored"
        assert ingest(session, topics.state("new-1"), future).kind == "dead"
    with sessions() as session:
        old, fresh = session.get(Device, "old-1"), session.get(Device, "new-1")
        assert old is not None and (old.protocol, old.state_version, old.online) == (1, 1, True)
        assert fresh is not None and (fresh.protocol, fresh.state_version) == (AGENT_PROTOCOL, STATE_SCHEMA_VERSION)
        assert session.scalars(select(TelemetryRow.epoch).where(TelemetryRow.device_id == "old-1")).one() == ""
        reason = session.scalars(select(DeadLetter.reason)).one()
        assert f"schema_version {STATE_SCHEMA_VERSION + 1} is not supported" in reason
        assert f"versions {', '.join(map(str, STATE_VERSIONS))}" in reason


def test_a_rollout_skips_old_agents_with_the_reason_and_refuses_only_old_ones(
        api_store: tuple[str, str]) -> None:
    url, sha = api_store  # fridge-0..2 in eu (current agents), fridge-3 in us
    sessions = open_store(url)
    with sessions.begin() as session:
        assert ingest(session, topics.state("old-1"), _old_state("old-1")).kind == "stored"
        assert ingest(session, topics.state("old-2"), _old_state("old-2")).kind == "stored"
    rollout = start(sessions, sha, RolloutPlan(selector=Selector(groups=["eu"]), waves="1,100%"), "r-mixed",  # type: ignore[arg-type]
                    clock=datetime(2026, 11, 26, tzinfo=UTC))
    with sessions() as session:
        devices = {d.device_id: d for d in view(session, rollout).devices}
    assert {d: r.state for d, r in devices.items()} == {"fridge-0": "PENDING", "fridge-1": "PENDING",
                                                          "fridge-2": "PENDING", "old-1": "SKIPPED",
                                                          "old-2": "SKIPPED"}
    assert devices["old-1"].reason == f"not deployed: {needs_new_agent(1)}"
    assert f"reports protocol 1, the cloud commands with protocol {AGENT_PROTOCOL}" in (devices["old-1"].reason or "")
    assert devices["fridge-0"].wave == 0 and devices["fridge-1"].wave == 1  # the canary is a device it can command
    with pytest.raises(RolloutError, match=r"every selected device old-1, old-2 needs a new agent: it reports "
                                           r"protocol 1.*nothing was sent"):
        start(sessions, sha, RolloutPlan(selector=Selector(devices=["old-1", "old-2"])), "r-old")
    with sessions() as session:
        assert session.get(Device, "old-1") is not None
        assert view(session, rollout).rollout.status == "RUNNING"


def test_needs_new_agent_below_the_minimum_only() -> None:
    assert needs_new_agent(MIN_AGENT_PROTOCOL - 1) is not None
    assert needs_new_agent(MIN_AGENT_PROTOCOL) is None and needs_new_agent(None) is None


def test_a_v4_manifest_needs_an_agent_that_reads_it() -> None:
    """A bundle with a centre crop (coldchain.manifest/v4) is not for an agent of protocol 2, which reads
    manifests up to v3; every other bundle still is (the compiler writes those as v3)."""
    assert needs_new_agent(2, "coldchain.manifest/v3") is None
    assert "a coldchain.manifest/v4 bundle needs protocol 3" in (needs_new_agent(2, "coldchain.manifest/v4") or "")
    assert needs_new_agent(3, "coldchain.manifest/v4") is None
    assert needs_new_agent(None, "coldchain.manifest/v4") is None


def test_a_rollout_of_a_v4_bundle_skips_protocol_2_agents(api_store: tuple[str, str]) -> None:
    url, sha = api_store
    sessions = open_store(url)
    with sessions.begin() as session:
        state = DeviceState(device_id="mid-1", online=True, board="rpi4", groups=["eu"], protocol=2)
        assert ingest(session, topics.state("mid-1"), state.to_json()).kind == "stored"
        bundle = session.get(BundleRow, sha)
        assert bundle is not None and bundle.manifest["schema"] == "coldchain.manifest/v3"
    plan = RolloutPlan(selector=Selector(groups=["eu"]), waves="100%")  # type: ignore[arg-type]
    with sessions() as session:
        before = {d.device_id: d.state for d in view(session, start(sessions, sha, plan, "r-v3")).devices}
    assert before["mid-1"] == "PENDING"
    with sessions.begin() as session:
        bundle = session.get(BundleRow, sha)
        assert bundle is not None
        bundle.manifest = {**bundle.manifest, "schema": "coldchain.manifest/v4"}
    with sessions() as session:
        after = {d.device_id: d for d in view(session, start(sessions, sha, plan, "r-v4", supersede=True)).devices}
    assert after["mid-1"].state == "SKIPPED" and after["fridge-0"].state == "PENDING"
    assert "needs protocol 3" in (after["mid-1"].reason or "")


def test_a_store_from_before_protocols_gets_the_columns(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    engine = open_store(url).kw["bind"]
    with engine.begin() as db:
        db.exec_driver_sql("ALTER TABLE devices DROP COLUMN protocol")
        db.exec_driver_sql("ALTER TABLE devices DROP COLUMN state_version")
    engine.dispose()
    sessions = open_store(url)
    with sessions.begin() as session:
        assert ingest(session, topics.state("d1"), _old_state("d1")).kind == "stored"
    with sessions() as session:
        device = session.get(Device, "d1")
        assert device is not None and (device.protocol, device.state_version) == (1, 1)
