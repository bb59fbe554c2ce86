"""A device's faults (``DeviceState.faults``, state version 5) are stored per device, on SQLite and
PostgreSQL: shown by the queries the CLI, the API and the dashboard share, filtered with
``faulty``, counted by code in ``/metrics`` without a device id, and a state without faults (cleared,
or from an older agent) leaves none. A store from before the column gets it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cloud.api import create_app
from cloud.ingest import ingest
from cloud.queries import DeviceFilter, Queries
from cloud.store import Device, open_store, sqlite_url
from coldchain.cli import app as cli
from contract import topics
from contract.state import DeviceState, Fault, FaultCode

GOLDEN = Path(__file__).parents[1] / "contract" / "golden"
SINCE = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
CAMERA = Fault(code=FaultCode.SOURCE_UNAVAILABLE, since=SINCE, message="frame source /dev/video0: it does not exist")
SPOOL = Fault(code=FaultCode.SPOOL_FULL, since=SINCE, message="the telemetry spool holds its limit")


def _state(device: str, *faults: Fault, ts: datetime | None = None) -> bytes:
    return DeviceState(device_id=device, online=True, board="rpi4", groups=["eu"], faults=list(faults),
                       ts=ts or datetime.now(UTC)).to_json()


def _v4_state(device: str) -> bytes:
    """An agent before faults: a version 4 state."""
    return json.dumps({**json.loads((GOLDEN / "state_v4.json").read_text()), "device_id": device}).encode()


def test_faults_are_stored_shown_filtered_and_cleared(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert ingest(session, topics.state("cam-gone"), _state("cam-gone", CAMERA)).kind == "stored"
        assert ingest(session, topics.state("both"), _state("both", CAMERA, SPOOL)).kind == "stored"
        assert ingest(session, topics.state("healthy"), _state("healthy")).kind == "stored"
        assert ingest(session, topics.state("old"), _v4_state("old")).kind == "stored"
    queries = Queries(sessions)
    faulty = queries.devices(DeviceFilter(faulty=True))
    assert [d.id for d in faulty.items] == ["both", "cam-gone"] and faulty.total == 2
    assert sorted(d.id for d in queries.devices(DeviceFilter(faulty=False)).items) == ["healthy", "old"]
    (shown,) = queries.device("cam-gone").device.faults
    assert (shown.code, shown.since, shown.message) == ("source_unavailable", SINCE, CAMERA.message)
    assert [f.code for f in queries.device("both").device.faults] == ["source_unavailable", "spool_full"]
    assert queries.device("old").device.faults == []
    assert queries.fault_counts() == {"source_unavailable": 2, "spool_full": 1}
    with sessions.begin() as session:  # the camera is back: the agent's next state has no fault
        assert ingest(session, topics.state("cam-gone"), _state("cam-gone")).kind == "stored"
        assert ingest(session, topics.state("both"), DeviceState(device_id="both", online=False).to_json()).kind \
            == "stored"  # the last will: the device says nothing of its faults, the last ones known are kept
    assert queries.device("cam-gone").device.faults == []
    assert [d.id for d in queries.devices(DeviceFilter(faulty=True)).items] == ["both"]
    assert queries.fault_counts() == {"source_unavailable": 1, "spool_full": 1}


def test_the_cli_the_api_and_metrics_show_the_faults(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cloud.db")
    sessions = open_store(url)
    with sessions.begin() as session:
        ingest(session, topics.state("cam-gone"), _state("cam-gone", CAMERA))
        ingest(session, topics.state("healthy"), _state("healthy"))
    runner = CliRunner()
    listed = runner.invoke(cli, ["fleet", "list", "--faulty", "--db", url], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "cam-gone" in listed.output and "source_unavailable" in listed.output and "healthy" not in listed.output
    everything = runner.invoke(cli, ["fleet", "list", "--db", url], terminal_width=200)
    assert "healthy" in everything.output and "faults" in everything.output
    shown = runner.invoke(cli, ["fleet", "show", "cam-gone", "--db", url], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "source_unavailable since 2026-11-30 09:15:00 UTC: frame source /dev/video0: it does not exist" \
        in shown.output
    token = "t0ken-for-the-tests-only"
    client = TestClient(create_app(sessions, token))
    auth = {"Authorization": f"Bearer {token}"}
    page = client.get("/devices", params={"faulty": "true"}, headers=auth).json()
    assert [(d["id"], [f["code"] for f in d["faults"]]) for d in page["items"]] == [
        ("cam-gone", ["source_unavailable"])]
    assert client.get("/devices/cam-gone", headers=auth).json()["device"]["faults"][0]["message"] == CAMERA.message
    metrics = client.get("/metrics", headers=auth).text
    assert "cam-gone" not in metrics
    family = {f.name: f for f in text_string_to_metric_families(metrics)}["coldchain_device_faults"]
    assert family.type == "gauge"
    assert {s.labels["code"]: s.value for s in family.samples} == {"source_unavailable": 1, "spool_full": 0}


def test_a_store_from_before_faults_gets_the_column(sessions: sessionmaker[Session]) -> None:
    engine = sessions.kw["bind"]
    with engine.begin() as db:
        db.exec_driver_sql("ALTER TABLE devices DROP COLUMN faults")
    upgraded = open_store(engine.url.render_as_string(hide_password=False))
    with upgraded.begin() as session:
        assert ingest(session, topics.state("d1"), _state("d1", CAMERA)).kind == "stored"
    with upgraded() as session:
        device = session.get(Device, "d1")
        assert device is not None and [f["code"] for f in device.faults or []] == ["source_unavailable"]
    upgraded.kw["bind"].dispose()


def test_the_dashboard_shows_and_filters_the_faults(tmp_path: Path) -> None:
    from cloud import tokens

    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    with sessions.begin() as session:
        ingest(session, topics.state("cam-gone"), _state("cam-gone", CAMERA))
        ingest(session, topics.state("healthy"), _state("healthy"))
    client = TestClient(create_app(sessions))
    signed = client.post("/ui/login", data={"token": tokens.create(sessions, "viewer", "read", "test"), "next": "/ui/"},
                         headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    fleet = client.get("/ui/").text
    assert "<th>Faults</th>" in fleet and '<span class="badge fail"' in fleet and "source_unavailable" in fleet
    only = client.get("/ui/", params={"faulty": "yes"}).text
    assert "/ui/devices/cam-gone" in only and "/ui/devices/healthy" not in only
    assert "/ui/devices/cam-gone" not in client.get("/ui/", params={"faulty": "no"}).text
    page = client.get("/ui/devices/cam-gone").text
    assert 'id="faults"' in page and "frame source /dev/video0: it does not exist" in page
    assert 'id="faults"' not in client.get("/ui/devices/healthy").text
