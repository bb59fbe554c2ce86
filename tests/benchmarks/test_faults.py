"""The fault harness (``python -m benchmarks.faults``) on its small sample (``--quick``): every row
runs, and not one invariant may break. A row that finds something fails here with its violations."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults.broker import mosquitto_binary
from benchmarks.faults.harness import QUICK, ROWS, run_row
from benchmarks.faults.world import World

NEEDS_BROKER = {"sigkill", "fuzz", "burst", "brokerkill", "poison", "cloudkill"}


@pytest.mark.parametrize("name", list(ROWS))
def test_no_invariant_breaks_on_the_quick_sample(name: str, fault_world: World, tmp_path: Path) -> None:
    if name in NEEDS_BROKER and mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it from apt)")
    row = run_row(name, fault_world, QUICK, tmp_path)
    if row.skipped:
        pytest.skip(f"{row.fault}: {row.skipped}")
    assert row.how_often, f"{row.fault} did not run"
    assert not row.violations, f"{row.fault}: {len(row.violations)} violations\n" + "\n".join(row.violations[:20])
