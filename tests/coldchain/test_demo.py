from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from coldchain.cli import app


def test_demo_registers_compiles_verifies_and_takes_inventory(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    result = CliRunner().invoke(app, ["demo", "--workspace", str(workspace), "--photos", "12"])
    assert result.exit_code == 0, result.output
    assert "registered models:/fridge/1" in result.output
    assert "golden self-test passed" in result.output
    assert "Inventory by the compiled bundle" in result.output and "mean" in result.output
    assert (workspace / "mlflow.db").exists()
    assert len(list((workspace / "bundles").glob("fridge-1-arm64-cortex-a72-ort-1.tar.gz"))) == 1
    again = CliRunner().invoke(app, ["demo", "--workspace", str(workspace), "--photos", "3"])
    assert again.exit_code == 0, again.output
    assert "registered models:/fridge/2" in again.output  # a re-run adds a version and a newer sequence
    assert len(list((workspace / "bundles").glob("fridge-2-arm64-cortex-a72-ort-2.tar.gz"))) == 1
