"""Monitoring over stored telemetry: drift against the reference and the previous bundle, and
alerts raised once per quiet period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud.fleet import add_bundle, bundle_ref
from cloud.ingest import ingest
from cloud.monitor import check_alerts, monitor
from cloud.store import open_store, sqlite_url
from compiler.bundle import Bundle
from contract import topics
from contract.telemetry import Telemetry


def test_drift_alerts_once_and_previous_bundle_column(tmp_path: Path, world: dict[str, object],
                                                      faulty_bundle: Bundle) -> None:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    now = datetime.now(UTC)
    with sessions.begin() as session:
        good = add_bundle(session, world["bundles"][5].tarball, world["trust"])  # type: ignore[index,arg-type]
        bad = add_bundle(session, faulty_bundle.tarball, world["trust"])  # type: ignore[arg-type]
        rates = good.manifest["reference"]["prediction_rates"]
        for seq, (row, predictions) in enumerate([(good, {k: int(v * 100) for k, v in rates.items()}),
                                                  (bad, {"milk_carton": 100})]):
            window = Telemetry(device_id=f"d{seq}", seq=1, window_start=now - timedelta(seconds=60), window_end=now,
                               bundle=bundle_ref(row), inferences=100, predictions=predictions)
            ingest(session, topics.telemetry(f"d{seq}"), window.to_json())
    with sessions.begin() as session:
        rows = {r.bundles[0]: r for r in monitor(session, "bundle", now - timedelta(minutes=5))}
        assert rows[good.sha256].reference_drift is not None and rows[good.sha256].reference_drift < 0.05
        assert rows[bad.sha256].previous_drift is not None and rows[bad.sha256].previous_drift > 0.15
        assert rows[good.sha256].previous_drift is None  # sequence 5 has no older bundle here
        raised = check_alerts(session, now - timedelta(minutes=5))
    assert raised and all("#7" in message for message in raised)
    assert any("previous bundle" in message for message in raised)
    with sessions.begin() as session:
        assert check_alerts(session, now - timedelta(minutes=5)) == []  # quiet period: not again
