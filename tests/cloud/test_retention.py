"""Retention with an injected clock: rows past their kind's TTL are deleted in batches and the
audit log counts them, rows inside it stay, and since monitoring and the gates read the rollups,
deleting the raw windows changes no figure and no gate's verdict. Exports carry keyed
pseudonyms, never a raw device id (unless an admin asks); inventories follow their group's setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cloud import rollouts
from cloud.api import create_app
from cloud.config import Exports, Retention
from cloud.config import Telemetry as TelemetrySettings
from cloud.exports import pseudonym, pseudonym_key
from cloud.fleet import add_bundle
from cloud.gates import evaluate
from cloud.ingest import ingest
from cloud.monitor import monitor
from cloud.plan import Gates, RolloutPlan
from cloud.queries import Queries
from cloud.retention import Retainer
from cloud.store import (
    DeadLetter,
    Device,
    EventRow,
    Rollout,
    RolloutDevice,
    TelemetryRollup,
    TelemetryRow,
    open_store,
    sqlite_url,
)
from cloud.tokens import create
from coldchain.cli import app as cli
from contract import topics
from contract.common import BundleRef, LatencyStats
from contract.events import JobEvent
from contract.jobs import JobState
from contract.manifest import Manifest
from contract.telemetry import Telemetry
from tests.cloud.test_controller import _controller

OLD = BundleRef(model_name="fridge", model_version="0", target="arm64-cortex-a72-ort", sequence=1, sha256="0" * 64)


def window(device: str, seq: int, bundle: BundleRef, predictions: dict[str, int],
           inventory: dict[str, int] | None = None) -> bytes:
    t = datetime.now(UTC)
    return Telemetry(device_id=device, seq=seq, window_start=t - timedelta(seconds=10), window_end=t, bundle=bundle,
                     inferences=30, errors={"E": seq % 2}, predictions=predictions, inventory=inventory or {},
                     latency_ms=LatencyStats(p50=2, p95=4 + seq % 3, p99=6, mean=2, max=7),
                     model_latency_ms=LatencyStats(p50=1, p95=2 + seq % 2, p99=3, mean=1, max=3)).to_json()


def count(sessions: sessionmaker[Session], table: object) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def test_deleting_raw_rows_changes_no_verdict(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        row = add_bundle(session, bundle.tarball, world["trust"])  # type: ignore[arg-type]
        new = BundleRef(model_name=row.model_name, model_version=row.model_version, target=row.target,
                        sequence=row.sequence, sha256=row.sha256)
        session.add_all([Device(id=d, online=True, groups=["eu"], active=OLD.model_dump(mode="json"),
                                active_sha256=OLD.sha256) for d in ("d1", "d2")])
    rollout = rollouts.start(sessions, row.sha256, RolloutPlan(waves="100%", gates=Gates(min_inferences=10)), "r-ret")
    with sessions.begin() as session:
        started = datetime.now(UTC) - timedelta(seconds=1)
        session.get(Rollout, rollout).wave_started_at = started  # type: ignore[union-attr]
        for d in ("d1", "d2"):
            session.get(RolloutDevice, (rollout, d)).state = "SUCCEEDED"  # type: ignore[union-attr]
        for seq in range(1, 16):
            for d in ("d1", "d2"):
                ingest(session, topics.telemetry(d), window(d, seq, OLD, {"milk": 20, "egg": 10}))
                ingest(session, topics.telemetry(d), window(d, 100 + seq, new, {"milk": 25, "egg": 5}))
        ingest(session, topics.events("d1"), JobEvent(device_id="d1", job_id="j", state=JobState.SUCCEEDED).to_json())
        ingest(session, topics.telemetry("d1"), b"not json")  # a dead letter (30 days)
    controller, _ = _controller(sessions, bundle.tarball, [datetime.now(UTC)])

    def verdict() -> tuple[object, ...]:
        with sessions() as session:
            r = session.get(Rollout, rollout)
            wave = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout)).all())
            evidence = controller.evidence(session, r, wave)  # type: ignore[arg-type]
            results = evaluate(Gates(min_inferences=10), evidence, Manifest.model_validate(row.manifest))
            figures = [(m.subject, m.summary.inferences, m.summary.errors, m.summary.latency_p95, m.reference_drift)
                       for m in monitor(session, "bundle")]
        return tuple(results), evidence.baseline, evidence.summary.inferences, tuple(figures)

    before = verdict()
    assert before[2] == 2 * 15 * 30 and {r.gate for r in before[0]} >= {"error_rate", "prediction_drift", "latency_p95"}
    assert count(sessions, TelemetryRow) == 60

    clock = [datetime.now(UTC) + timedelta(days=5)]
    retainer = Retainer(sessions, Retention(batch=7), clock=lambda: clock[0])
    assert retainer.step() == {"telemetry": 0, "events": 0, "dead_letters": 0, "alert_deliveries": 0, "alerts": 0,
                               "audit": 0, "rollup_hours": 0, "rollup_minutes": 0}
    assert count(sessions, TelemetryRow) == 60  # inside their 10 days: kept
    clock[0] = datetime.now(UTC) + timedelta(days=11)
    deleted = retainer.step()
    assert deleted["telemetry"] == 60 and deleted["events"] == 1 and deleted["dead_letters"] == 0
    assert count(sessions, TelemetryRow) == 0 and count(sessions, EventRow) == 0 and count(sessions, DeadLetter) == 1
    assert count(sessions, TelemetryRollup) > 0
    assert verdict() == before  # the same gates, values, baseline and monitoring figures
    clock[0] = datetime.now(UTC) + timedelta(days=31)
    assert retainer.step()["dead_letters"] == 1
    entries = Queries(sessions).audit(action="retention").items
    assert [e.detail["deleted"]["telemetry"] for e in entries] == [0, 60, 0]
    assert all(e.actor == "cloud" and e.result == "ok" for e in entries)


def test_exports_carry_pseudonyms_unless_an_admin_asks(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cloud.db")
    sessions = open_store(url)
    devices = ("fridge-alpha", "fridge-beta")
    with sessions.begin() as session:
        for seq, d in enumerate(devices):
            ingest(session, topics.telemetry(d), window(d, seq, OLD, {"milk": 3}))
    client = TestClient(create_app(sessions))
    tokens = {s: {"Authorization": f"Bearer {create(sessions, s, s, 'test')}"} for s in ("read", "operate", "admin")}
    exported = client.get("/telemetry/export", params={"by": "device"}, headers=tokens["read"])
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert not any(d in exported.text for d in devices), exported.text
    key = pseudonym_key(sessions, Exports())
    assert sorted(line.split(",")[0] for line in exported.text.splitlines()[1:]) == sorted(
        pseudonym(key, d) for d in devices)
    assert client.get("/telemetry/export", headers=tokens["read"]).text == exported.text  # stable pseudonyms
    assert client.get("/telemetry/export", params={"ids": "raw"}, headers=tokens["operate"]).status_code == 403
    raw = client.get("/telemetry/export", params={"ids": "raw"}, headers=tokens["admin"])
    assert raw.status_code == 200 and all(d in raw.text for d in devices)

    out = tmp_path / "out" / "monitor.csv"
    result = CliRunner().invoke(cli, ["monitor", "--by", "device", "--export", str(out), "--db", url])
    assert result.exit_code == 0, result.output
    assert not any(d in out.read_text() for d in devices) and pseudonym(key, devices[0]) in out.read_text()
    CliRunner().invoke(cli, ["monitor", "--by", "device", "--export", str(out), "--raw-ids", "--db", url])
    assert all(d in out.read_text() for d in devices)
    modes = [(e.actor.split(":")[0], e.detail["ids"], e.result.split(":")[0])
             for e in Queries(sessions).audit(action="telemetry.export").items]
    assert modes == [("cli", "raw", "ok"), ("cli", "pseudonyms", "ok"), ("token", "raw", "ok"),
                     ("token", "raw", "refused"), ("token", "pseudonyms", "ok"), ("token", "pseudonyms", "ok")]


def test_inventory_is_kept_as_each_group_allows(sessions: sessionmaker[Session]) -> None:
    settings = TelemetrySettings(groups={"eu": "counts", "us": "off"})
    with sessions.begin() as session:
        session.add_all([Device(id="eu-1", groups=["eu"]), Device(id="us-1", groups=["us"]),
                         Device(id="both", groups=["eu", "us"]), Device(id="free", groups=["asia"])])
    with sessions.begin() as session:
        for d in ("eu-1", "us-1", "both", "free", "unknown"):
            ingest(session, topics.telemetry(d), window(d, 1, OLD, {"milk": 3}, {"milk": 2, "egg": 4}), settings)
    with sessions() as session:
        stored = {r.device_id: r.payload["inventory"] for r in session.scalars(select(TelemetryRow)).all()}
        rolled = {r.device_id: r.inventory for r in session.scalars(select(TelemetryRollup)).all()}
        shown = {m.subject: m.summary.inventory for m in monitor(session, "device")}
    expected = {"eu-1": {"(all)": 6}, "us-1": {}, "both": {}, "free": {"milk": 2, "egg": 4},
                "unknown": {"milk": 2, "egg": 4}}
    assert stored == expected
    assert rolled == {d: (inv or None) for d, inv in expected.items()}
    assert shown == expected


def test_a_store_from_before_the_rollups_is_summed_into_them_once(sessions: sessionmaker[Session]) -> None:
    """Opened by this version, an older store's telemetry (no rollups table) is summed into the
    rollups, once, however many processes open it: monitoring and a running wave's gate see it."""
    with sessions.begin() as session:
        for seq in range(1, 8):
            for d in ("d1", "d2"):
                ingest(session, topics.telemetry(d), window(d, seq, OLD, {"milk": seq}, {"milk": seq}))
    with sessions() as session:
        figures = [(m.subject, m.summary.windows, m.summary.inferences, m.summary.errors, m.summary.latency_p95,
                    dict(m.summary.predictions), m.summary.inventory) for m in monitor(session, "device")]
    assert [f[1] for f in figures] == [7, 7]
    engine = sessions.kw["bind"]
    TelemetryRollup.__table__.drop(engine)  # as a store from before the rollups
    url = engine.url.render_as_string(hide_password=False)
    for _ in range(2):  # the second open finds the marker: nothing counted twice
        reopened = open_store(url)
    with reopened() as session:
        again = [(m.subject, m.summary.windows, m.summary.inferences, m.summary.errors, m.summary.latency_p95,
                  dict(m.summary.predictions), m.summary.inventory) for m in monitor(session, "device")]
    assert again == figures
    reopened.kw["bind"].dispose()
