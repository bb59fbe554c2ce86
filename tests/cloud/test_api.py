"""The HTTP API over a real store: reads and writes need the bearer token (tests/cloud/test_api_security.py
has the rest of the gate), errors are 4xx with the reason, and a rollout started over HTTP is the same
rollout the CLI shows."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.api import create_app
from cloud.errors import CloudError
from cloud.fleet import add_bundle
from cloud.ingest import ingest
from cloud.store import open_store
from coldchain.cli import app as cli
from contract import topics
from contract.state import DeviceState

TOKEN = "t0ken-for-the-tests-only"


def test_reads_writes_and_auth(api_store: tuple[str, str]) -> None:
    url, sha = api_store
    client = TestClient(create_app(open_store(url), TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/devices", params={"group": "eu"}).status_code == 401
    assert [d["id"] for d in client.get("/devices", params={"group": "eu"}, headers=auth).json()["items"]] == [
        "fridge-0", "fridge-1", "fridge-2"]
    assert client.get("/devices/nope", headers=auth).status_code == 404
    body = {"bundle": sha[:10], "plan": {"selector": {"groups": ["eu"]}, "waves": [{"count": 1}, {"percent": 100}]},
            "rollout_id": "r-api"}
    assert client.post("/rollouts", json=body).status_code == 401
    assert client.post("/rollouts", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    created = client.post("/rollouts", json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "RUNNING" and created.json()["waves"] == 2
    assert client.post("/rollouts/r-api/resume", headers=auth).status_code == 409  # it is not paused
    assert client.post("/rollouts/r-api/pause", headers=auth).json()["status"] == "PAUSED"
    aborted = client.post("/rollouts/r-api/abort", headers=auth, json={"reason": "wrong fridge"}).json()
    assert aborted["status"] == "ABORTING" and aborted["reason"] == "wrong fridge"
    bad = client.post("/rollouts", headers=auth, json={"bundle": sha, "plan": {"waves": [{"percent": 0}]}})
    assert bad.status_code == 422 and "percent" in bad.text
    assert client.get("/openapi.json", headers=auth).json()["info"]["title"] == "coldchain cloud"
    assert client.get("/telemetry/summary", headers=auth).status_code == 200
    with pytest.raises(CloudError, match="16 characters"):
        create_app(open_store(url), "short")


def test_cli_fleet_tag_and_rollout(api_store: tuple[str, str]) -> None:
    url, sha = api_store
    runner = CliRunner()
    result = runner.invoke(cli, ["fleet", "tag", "fridge-3", "--set", "ring=canary", "--add-group", "beta",
                                 "--db", url])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["fleet", "list", "--group", "beta", "--db", url])
    assert "fridge-3" in listed.output and "fridge-0" not in listed.output
    started = runner.invoke(cli, ["rollout", "start", sha[:12], "--group", "beta", "--waves", "100%", "--id", "r-cli",
                                  "--db", url])
    assert started.exit_code == 0, started.output
    assert "r-cli" in started.output and "PENDING 1" in started.output
    unknown = runner.invoke(cli, ["rollout", "start", "ffff", "--db", url])
    assert unknown.exit_code == 1 and "matches no bundle" in unknown.output
    nobody = runner.invoke(cli, ["rollout", "start", sha[:12], "--group", "mars", "--db", url])
    assert nobody.exit_code == 1 and "matches no device" in nobody.output
    waves = runner.invoke(cli, ["rollout", "start", sha[:12], "--waves", "50%,10%", "--db", url])
    assert waves.exit_code == 1 and "must grow" in waves.output
    rolled = runner.invoke(cli, ["rollout", "rollback", "r-cli", "--reason", "test", "--yes", "--db", url])
    assert rolled.exit_code == 0 and "ROLLING_BACK" in rolled.output
    status = runner.invoke(cli, ["rollout", "status", "--db", url])
    assert "r-cli" in status.output


def test_rollback_plan_names_each_devices_own_known_good_bundle(api_store: tuple[str, str],
                                                                world: dict[str, object]) -> None:
    """Computed from what each device reported: one goes back to the known-good bundle it names,
    one reports none (it keeps the bundle: never "the other slot"), one no longer runs the bundle;
    the CLI shows this plan and acts only when confirmed."""
    from cloud import rollouts
    from cloud.store import RolloutDevice
    from contract.state import Slot, SlotStatus

    url, sha = api_store
    sessions = open_store(url)
    bundles = world["bundles"]  # type: ignore[index]
    five, four = bundles[5].ref, bundles[4].ref  # type: ignore[index]
    with sessions.begin() as session:
        add_bundle(session, bundles[4].tarball, world["trust"])  # type: ignore[index,arg-type]
    rollouts.start(sessions, sha, rollouts.RolloutPlan.model_validate(
        {"selector": {"groups": ["eu"]}, "waves": [{"percent": 100}]}), rollout_id="r-plan")
    reported = {
        "fridge-0": DeviceState(device_id="fridge-0", online=True, active=five, previous=four, slots={
            "a": Slot(status=SlotStatus.GOOD, bundle=four), "b": Slot(status=SlotStatus.CANDIDATE, bundle=five)}),
        "fridge-1": DeviceState(device_id="fridge-1", online=True, active=five, previous=None, slots={
            "a": Slot(status=SlotStatus.BAD, bundle=four), "b": Slot(status=SlotStatus.CANDIDATE, bundle=five)}),
        "fridge-2": DeviceState(device_id="fridge-2", online=True, active=four, previous=None),
    }
    with sessions.begin() as session:
        for device, state in reported.items():
            ingest(session, topics.state(device), state.to_json())
        for entry in session.query(RolloutDevice).filter_by(rollout_id="r-plan"):
            entry.state, entry.activated = "SUCCEEDED", True
    with sessions() as session:
        plan = {step.device_id: step for step in rollouts.rollback_plan(session, "r-plan")}
    assert plan["fridge-0"].action == "roll back" and plan["fridge-0"].to == four.model_dump(mode="json")
    assert plan["fridge-1"].action == "impossible" and plan["fridge-1"].to is None
    assert plan["fridge-2"].action == "nothing"
    runner = CliRunner()
    declined = runner.invoke(cli, ["rollout", "rollback", "r-plan", "--db", url], input="n\n")
    assert declined.exit_code == 1 and "nothing was changed" in declined.output, declined.output
    rows = {line.split("│")[1].strip(): line for line in declined.output.splitlines() if line.count("│") > 2}
    assert "roll back" in rows["fridge-0"] and f"#4 {four.sha256[:10]}" in rows["fridge-0"], declined.output
    assert "impossible" in rows["fridge-1"] and "nothing" in rows["fridge-2"]
    with sessions() as session:
        assert rollouts.get(session, "r-plan").status == "RUNNING"
    confirmed = runner.invoke(cli, ["rollout", "rollback", "r-plan", "--yes", "--db", url])
    assert confirmed.exit_code == 0 and "ROLLING_BACK" in confirmed.output
