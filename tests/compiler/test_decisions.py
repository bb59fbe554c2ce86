"""Decisions are shown (issue 15): a searched pass that kept no value leaves a row saying what it
tried, and a model is labelled by what was actually quantized, not by the target's name."""

from __future__ import annotations

from pathlib import Path

import yaml

from compiler.description import load_description
from compiler.evaluate import image_sets
from compiler.passes import get_pass
from compiler.pipeline import Pipeline
from compiler.precision import describe
from compiler.target import TARGETS_DIR, load_target
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from tests.compiler.graphs import calibration, small_cnn


def _run(name: str, model: Path, workdir: Path, **config: object) -> Path:
    cls = get_pass(name)
    workdir.mkdir(parents=True, exist_ok=True)
    return cls().run(model, cls.config(config), workdir)


def test_models_are_labelled_by_what_was_quantized(tmp_path: Path) -> None:
    """Before: the label was the target's precision, so int8 that kept every Conv in float was 'int8'."""
    model = small_cnn(tmp_path / "m.onnx")
    cal = calibration(tmp_path / "cal.npz")
    assert describe(model).label == "float32"
    full = _run("quantize.static", model, tmp_path / "full", calibration=cal)
    assert describe(full).label == "int8" and describe(full).int8_fraction == 1.0
    nothing = _run("quantize.static", model, tmp_path / "none", calibration=cal,
                   exclude_nodes=["conv1", "conv2", "fc"])
    assert describe(nothing).label == "float32" and describe(nothing).int8_fraction == 0.0
    some = _run("quantize.static", model, tmp_path / "some", calibration=cal, exclude_nodes=["conv1"])
    assert describe(some).label == "mixed: 2 int8, 1 float32 of 3 compute nodes"
    weights = _run("quantize.weights", model, tmp_path / "weights", min_elements=1)
    assert describe(weights).label == "int8 weights, float activations"
    half = _run("fp16", model, tmp_path / "half", weights_only=True, min_elements=1)
    assert describe(half).label == "fp16 weights, float32 compute"


def test_a_search_that_kept_no_value_leaves_a_row(fridge_images: tuple[Path, Path], tmp_path: Path) -> None:
    """Before: structured pruning that tried every ratio and kept none left no row and no note."""
    profile = yaml.safe_load((TARGETS_DIR / "x86-64-avx512-ort.yaml").read_text())
    prune = next(p for p in profile["passes"] if p["name"] == "prune.structured")
    prune["search"] = {"ratio": [0.5, 0.4]}
    prune["min_fidelity"] = 1.0  # nothing removes half the channels without any loss
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(profile))
    description = load_description(DESCRIPTION_FILE)
    cal, ev, _ = image_sets(fridge_images[0], fridge_images[1], 40, 0, description)
    pipeline = Pipeline(description, load_target(path), cal, ev, tmp_path / "work")
    result = pipeline.run(MODEL_FILE)
    assert [s.name for s in result.steps] == ["float", "cleanup", "quantize.static", "fold.normalize"]
    (row,) = [r for r in result.rows if not r.kept]
    assert row.name == "prune.structured" and not row.within_budget
    assert "not kept: no ratio in [0.5, 0.4] reached fidelity 1.0000" in row.note and "skipped" in row.note
    assert result.rows.index(row) < [r.name for r in result.rows].index("quantize.static")
    assert result.final.precision == "int8"
