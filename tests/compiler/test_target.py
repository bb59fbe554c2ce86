from __future__ import annotations

from pathlib import Path

import pytest

from compiler.errors import TargetError
from compiler.target import list_targets, load_target, with_min_fidelity
from contract.common import Runtime

REQUIRED = {"arm64-cortex-a72-ort", "arm64-cortex-a76-ort", "arm64-litert", "jetson-orin-trt-fp16",
            "jetson-orin-trt-int8", "x86-64-avx512-ort"}


def test_required_targets_load() -> None:
    assert set(list_targets()) >= REQUIRED
    for name in REQUIRED:
        profile = load_target(name)
        assert profile.name == name and profile.passes[0].name == "cleanup"
    assert load_target("arm64-litert").runtime.name is Runtime.LITERT
    assert load_target("arm64-litert").layout == "NHWC"
    assert load_target("jetson-orin-trt-int8").runtime.name is Runtime.TENSORRT


def test_unknown_target_lists_the_valid_ones() -> None:
    with pytest.raises(TargetError, match=r"valid targets: .*arm64-cortex-a72-ort"):
        load_target("raspberry-pi-9")


def test_invalid_profile_names_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (Path(__file__).parents[2] / "compiler" / "targets" / "x86-64-avx512-ort.yaml").read_text()
    bad.write_text(text.replace("precision: int8", "precision: int3").replace("name: cleanup", "name: magic"))
    with pytest.raises(TargetError) as info:
        load_target(bad)
    assert "precision" in str(info.value) and "unknown passes ['magic']" in str(info.value)


def test_fidelity_override() -> None:
    profile = with_min_fidelity(load_target("arm64-cortex-a72-ort"), 0.5)
    assert profile.budget.min_fidelity["detection"] == 0.5
    assert with_min_fidelity(profile, None) is profile
