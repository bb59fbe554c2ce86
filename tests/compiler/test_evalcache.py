"""Evaluations are counted, cached by model bytes and bounded; exact passes are checked instead of
re-evaluated (issue 15: the NanoDet a72 compile spent most of its time re-evaluating)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from agent.postprocess import Prediction
from compiler.description import load_description
from compiler.evalcache import Evaluation, EvaluationCache
from compiler.evaluate import image_sets
from compiler.pipeline import Pipeline
from compiler.target import load_target
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE


@pytest.fixture(scope="module")
def sets(fridge_images: tuple[Path, Path]) -> tuple[object, object]:
    cal, ev, _ = image_sets(fridge_images[0], fridge_images[1], 40, 0, load_description(DESCRIPTION_FILE))
    return cal, ev


def _pipeline(sets: tuple[object, object], workdir: Path, cache: EvaluationCache | None = None) -> Pipeline:
    cal, ev = sets
    return Pipeline(load_description(DESCRIPTION_FILE), load_target("arm64-cortex-a72-ort"), cal, ev, workdir,  # type: ignore[arg-type]
                    cache=cache)


def test_the_same_model_bytes_are_evaluated_once(sets: tuple[object, object], tmp_path: Path) -> None:
    """Before: every measure ran the whole evaluation set, whatever had been run before."""
    cache = EvaluationCache()
    first = _pipeline(sets, tmp_path / "a", cache)
    _, reference, _ = first.measure("float", MODEL_FILE, {}, None, None)
    copy = tmp_path / "copy.onnx"
    shutil.copy(MODEL_FILE, copy)
    step, _, _ = first.measure("copy", copy, {}, reference, None)
    assert step.fidelity == 1.0
    assert first.counts.evaluations == 1 and first.counts.cache_hits == 1
    assert first.counts.images == len(sets[1].frames)  # type: ignore[attr-defined]
    second = _pipeline(sets, tmp_path / "b", cache)  # another target of the same compile
    second.measure("float", MODEL_FILE, {}, None, None)
    assert second.counts.evaluations == 0 and second.counts.cache_hits == 1


def test_the_cache_is_bounded() -> None:
    cache = EvaluationCache(max_entries=2)
    entry = Evaluation([Prediction((), np.zeros(1, np.float32))])
    for key in ("a", "b", "c"):
        cache.put(key, entry)
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") is entry
    cache.get("b")  # used: now the newest
    cache.put("d", entry)
    assert cache.get("b") is entry and cache.get("c") is None
    with pytest.raises(ValueError):
        EvaluationCache(max_entries=0)


def test_an_exact_pass_is_checked_and_one_that_moved_is_evaluated(sets: tuple[object, object],
                                                                  tmp_path: Path) -> None:
    pipeline = _pipeline(sets, tmp_path)
    float_step, reference, _ = pipeline.measure("float", MODEL_FILE, {}, None, None)
    renamed = tmp_path / "renamed.onnx"  # the same function, other bytes: what cleanup does
    model = onnx.load(str(MODEL_FILE))
    model.graph.name = "renamed"
    onnx.save(model, str(renamed))
    step = pipeline.step("cleanup", renamed, {}, float_step, reference, None)
    assert not step.evaluated and step.fidelity == float_step.fidelity and "not re-evaluated" in step.note
    assert pipeline.counts.evaluations == 1 and pipeline.counts.screenings == 1
    moved = tmp_path / "moved.onnx"  # a pass that claims exactness but changed a weight
    init = next(i for i in model.graph.initializer if len(i.dims) == 4)
    w = numpy_helper.to_array(init).copy()
    w *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(moved))
    step = pipeline.step("cleanup", moved, {}, float_step, reference, None)
    assert step.evaluated and pipeline.counts.evaluations == 2


def test_fold_normalize_is_checked_not_re_evaluated(sets: tuple[object, object], tmp_path: Path) -> None:
    """The pass is bit-identical by construction (the agent's own arithmetic in the graph): it used to
    cost the NanoDet a72 compile a fourth whole evaluation."""
    pipeline = _pipeline(sets, tmp_path)
    float_step, reference, _ = pipeline.measure("float", MODEL_FILE, {}, None, None)
    spec = next(s for s in pipeline.target.passes if s.name == "fold.normalize")
    folded, record = pipeline.apply_pass(spec, MODEL_FILE, {}, "fold")
    assert folded != MODEL_FILE
    step = pipeline.step("fold.normalize", folded, record, float_step, reference, None)
    assert not step.evaluated and step.fidelity == 1.0 and "within 0 " in step.note
    assert pipeline.counts.evaluations == 1 and pipeline.counts.screenings == 1
