"""The README's first command, end to end on a small fleet: register and compile v1 and a faulty
v2, verify, take inventory, roll v1 out in waves, catch v2 by its gate and roll it back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from cloud.store import Device, RolloutDevice, open_store, sqlite_url
from coldchain.cli import app


def test_demo_end_to_end(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    result = CliRunner().invoke(app, ["demo", "--workspace", str(workspace), "--photos", "60", "--fridges", "4"])
    assert result.exit_code == 0, result.output
    assert "registered models:/fridge/1" in result.output and "registered models:/fridge/2" in result.output
    assert "golden self-test passed" in result.output
    assert "Inventory by the compiled bundle" in result.output
    assert (workspace / "mlflow.db").exists()
    assert len(list((workspace / "bundles").glob("fridge-*-arm64-cortex-a72-ort-*.tar.gz"))) == 2
    sessions = open_store(sqlite_url(workspace / "cloud.db"))
    with sessions() as session:
        v1 = session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == "demo-v1")).all()
        v2 = session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == "demo-v2")).all()
        assert len(v1) == 8 and {d.state for d in v1} == {"SUCCEEDED"}
        touched = [d for d in v2 if d.activated]
        assert touched and all(d.rolled_back for d in touched)
        v1_sha = session.scalars(select(Device.active_sha256)).all()
        assert len(set(v1_sha)) == 1  # every fridge ended on v1
    assert "prediction_drift" in result.output and "ROLLED_BACK" in result.output
