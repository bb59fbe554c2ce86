"""``/metrics`` scraped and parsed by Prometheus' own parser: names, types and labels follow the
conventions, every family the operators' dashboards need is there with the store's numbers, and
no device id appears anywhere."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts, tokens
from cloud.api import create_app
from cloud.fleet import add_bundle
from cloud.ingest import ingest
from cloud.metrics import Runtime
from cloud.monitor import raise_alert
from cloud.plan import RolloutPlan, Selector
from cloud.store import Rollout
from contract import topics
from contract.state import DeviceState

EXPECTED = {  # name (as the parser gives it: counters without _total) -> type
    "coldchain_store_up": "gauge", "coldchain_devices": "gauge", "coldchain_group_devices": "gauge",
    "coldchain_rollouts": "gauge", "coldchain_rollout_gate_value": "gauge", "coldchain_rollout_gate_limit": "gauge",
    "coldchain_rollout_gate_passed": "gauge", "coldchain_dead_letters": "gauge", "coldchain_alerts": "gauge",
    "coldchain_ingest_messages": "counter", "coldchain_ingest_queue_messages": "gauge",
    "coldchain_ingest_lag_seconds": "gauge", "coldchain_publisher_sent_bytes": "counter",
    "coldchain_alert_deliveries": "counter", "coldchain_part_failures": "counter",
    "coldchain_api_requests": "counter", "coldchain_api_refused": "counter",
    "coldchain_api_unexpected_errors": "counter", "coldchain_device_faults": "gauge",
}


def test_metrics_parse_with_the_prometheus_parser(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    with sessions.begin() as session:
        for i in range(5):
            device = f"fridge-{i}"
            state = DeviceState(device_id=device, online=True, board="rpi4", groups=["eu" if i < 3 else "us"])
            ingest(session, topics.state(device), state.to_json())
        ingest(session, topics.state("fridge-4"), DeviceState(device_id="fridge-4", online=False).to_json())
        ingest(session, topics.telemetry("fridge-0"), b"not json")
        ingest(session, topics.telemetry("fridge-1"), b'{"schema_version": 99}')
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
        raise_alert(session, "gate_failed", "rollout", "r-m", "wave 1 failed", 0.3)
        raise_alert(session, "drift", "bundle", "fridge v1", "drift", 0.2)
    rollouts.start(sessions, sha, RolloutPlan(selector=Selector(groups=["eu"])), "r-m")
    with sessions.begin() as session:
        row = session.get(Rollout, "r-m")
        assert row is not None
        row.gate_results = [{"wave": 0, "results": [
            {"gate": "job_success", "passed": True, "value": 1.0, "limit": 1.0, "detail": "1/1"},
            {"gate": "prediction_drift", "passed": False, "value": 0.31, "limit": 0.15, "detail": "JS"}]}]
    runtime = Runtime(ingest_counts=lambda: {"stored": 40, "dead": 2}, ingest_queue=lambda: 3,
                      ingest_lag_s=lambda: 1.5, egress_bytes=lambda: (1000, 200),
                      deliveries=lambda: {"delivered": 2, "retried": 1}, failures=lambda: {"alerts": 1})
    client = TestClient(create_app(sessions, runtime=runtime))
    client.get("/devices")  # refused: counted
    response = client.get("/metrics", headers={"Authorization": f"Bearer {tokens.create(sessions, 'p', 'read', 't')}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "fridge-" not in response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {name: families[name].type for name in EXPECTED if name in families} == EXPECTED
    for family in families.values():
        assert family.name.startswith("coldchain_"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            assert "device" not in sample.labels and "device_id" not in sample.labels

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in families[name].samples if s.labels == labels and not s.name.endswith("_created")]
        assert len(found) == 1, (name, labels, families[name].samples)
        return found[0]

    assert value("coldchain_store_up") == 1
    assert value("coldchain_devices", online="true") == 4 and value("coldchain_devices", online="false") == 1
    assert value("coldchain_group_devices", group="eu", online="true") == 3
    assert value("coldchain_group_devices", group="us", online="false") == 1
    assert value("coldchain_rollouts", status="RUNNING") == 1
    assert value("coldchain_rollout_gate_value", rollout="r-m", gate="prediction_drift") == 0.31
    assert value("coldchain_rollout_gate_limit", rollout="r-m", gate="prediction_drift") == 0.15
    assert value("coldchain_rollout_gate_passed", rollout="r-m", gate="prediction_drift") == 0
    assert value("coldchain_dead_letters", reason="PayloadError") == 2  # the contract's exception, not the text
    assert value("coldchain_alerts", kind="gate_failed") == 1
    assert value("coldchain_ingest_messages", outcome="stored") == 40
    assert value("coldchain_ingest_lag_seconds") == 1.5
    assert value("coldchain_publisher_sent_bytes", stream="group") == 800
    assert value("coldchain_publisher_sent_bytes", stream="repair") == 200
    assert value("coldchain_api_refused", reason="unauthorized") == 1


def test_refused_tokens_and_failed_sign_ins_are_counted_by_reason(sessions: sessionmaker[Session]) -> None:
    """API requests and dashboard sign-ins with an unknown or revoked token, and writes with a token
    of too low a scope, are counted by surface and reason; no token (nor a piece of one) is exposed."""
    import re

    read = tokens.create(sessions, "viewer", "read", "test")
    gone = tokens.create(sessions, "old", "operate", "test")
    tokens.revoke(sessions, "old", "test")
    unknown = "cct_" + "u" * 43
    client = TestClient(create_app(sessions), headers={"Origin": "http://testserver"})  # as a browser posts forms

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert client.get("/devices").status_code == 401
    assert client.get("/devices", headers=bearer(unknown)).status_code == 401
    for _ in range(2):
        assert client.get("/alerts", headers=bearer(gone)).status_code == 401
    assert client.post("/rollouts/r-x/pause", headers=bearer(read)).status_code == 403
    assert client.get("/devices", headers=bearer(read)).status_code == 200  # accepted: not counted
    for token in (unknown, gone):
        assert client.post("/ui/login", data={"token": token, "next": "/ui/"}).status_code == 401
    assert client.post("/ui/login", data={"token": read, "next": "/ui/"}, follow_redirects=False).status_code == 303
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/ui/").text)
    assert csrf is not None
    assert client.post("/ui/rollouts/r-x/pause", data={"csrf": csrf.group(1)}).status_code == 403
    text = client.get("/metrics", headers=bearer(read)).text
    for token in (read, gone, unknown):
        assert token not in text and token[4:14] not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families["coldchain_auth_refused"]
    assert family.type == "counter"
    counted = {(s.labels["surface"], s.labels["reason"]): s.value for s in family.samples if s.name.endswith("_total")}
    assert counted == {("api", "missing"): 1, ("api", "unknown"): 1, ("api", "revoked"): 2, ("api", "scope"): 1,
                       ("dashboard", "unknown"): 1, ("dashboard", "revoked"): 1, ("dashboard", "scope"): 1}


def test_group_series_are_bounded_whatever_groups_devices_report(sessions: sessionmaker[Session]) -> None:
    """Found by review: /metrics (then served without a token) had one series per group any device
    reported, so a fleet could make its cardinality (and the names it publishes) unbounded. The
    largest groups get a series each; the rest are summed under '(other)'."""
    from cloud.metrics import MAX_GROUP_SERIES

    count = MAX_GROUP_SERIES + 10
    with sessions.begin() as session:
        for i in range(count):
            device = f"fridge-{i}"
            groups = ["kitchen"] + ([f"own-{i}"] if i else [])
            ingest(session, topics.state(device), DeviceState(device_id=device, online=True, groups=groups).to_json())
    scraper = tokens.create(sessions, "prometheus", "read", "test")
    text = TestClient(create_app(sessions)).get("/metrics", headers={"Authorization": f"Bearer {scraper}"}).text
    series = {s.labels["group"]: s.value for f in text_string_to_metric_families(text)
              if f.name == "coldchain_group_devices" for s in f.samples if s.labels["online"] == "true"}
    assert len(series) <= MAX_GROUP_SERIES + 1 and series["kitchen"] == count
    assert sum(series.values()) == count + count - 1  # every membership counted once, in a series or in '(other)'
    assert series["(other)"] >= 10
