from __future__ import annotations

import numpy as np
import pytest

from agent import postprocess
from agent.errors import ProcessingError
from agent.preprocess import Letterbox

LABELS = ["apple", "milk", "can"]
NONE = Letterbox(1.0, 0.0, 0.0)


def test_multilabel_per_label_thresholds() -> None:
    post = postprocess.get("multilabel")
    scores = np.array([[0.6, 0.4, 0.1]], np.float32)
    pred = post([scores], LABELS, {"threshold": 0.5, "thresholds": {"milk": 0.35}}, NONE)
    assert pred.labels == {"apple", "milk"}
    assert pred.inventory == {"apple": 1, "milk": 1}


def test_topk_softmax() -> None:
    pred = postprocess.get("topk")([np.array([1.0, 3.0, 2.0])], LABELS, {"k": 2, "softmax": True}, NONE)
    assert [d.label for d in pred.detections] == ["milk", "can"]
    assert pytest.approx(sum(pred.scores.tolist())) == 1.0


def test_bad_outputs_are_errors() -> None:
    post = postprocess.get("multilabel")
    with pytest.raises(ProcessingError, match="2 scores for 3 labels"):
        post([np.zeros(2)], LABELS, {}, NONE)
    with pytest.raises(ProcessingError, match="NaN"):
        post([np.array([np.nan, 0, 0])], LABELS, {}, NONE)
    with pytest.raises(ProcessingError, match="must be a number"):
        post([np.zeros(3)], LABELS, {"threshold": "high"}, NONE)


def test_unknown_postprocessor() -> None:
    with pytest.raises(ProcessingError, match="known: multilabel, nanodet, topk"):
        postprocess.get("yolo9000")


def test_multilabel_compares_in_float32_and_rebuilds_its_thresholds_per_parameter_set() -> None:
    """A float32 score equal to the float32 of its threshold is found (numpy compares a float32 score
    with a Python float in float32: 0.175 rounds down, so a float64 comparison would miss it); another
    parameter set, or a changed model, gets its own thresholds; bad parameters fail on every call."""
    post = postprocess.get("multilabel")
    scores = np.array([[np.float32(0.175), 0.2, 0.9]], np.float32)
    params = {"threshold": 0.5, "thresholds": {"apple": 0.175, "milk": 0.25}}
    for _ in range(2):
        assert [d.label for d in post([scores], LABELS, params, NONE).detections] == ["apple", "can"]
    assert post([scores], LABELS, {"threshold": 0.95}, NONE).detections == ()
    assert [d.label for d in post([scores], LABELS, {"threshold": 0.15}, NONE).detections] == LABELS
    other = ["apple", "milk", "egg"]
    assert [(d.label, d.score) for d in post([scores], other, {"threshold": 0.15}, NONE).detections] == [
        ("apple", float(np.float32(0.175))), ("milk", float(np.float32(0.2))), ("egg", float(np.float32(0.9)))]
    for _ in range(2):
        with pytest.raises(ProcessingError, match="must map label"):
            post([scores], LABELS, {"thresholds": [0.1]}, NONE)
    with pytest.raises(ProcessingError, match="infinity"):
        post([np.array([np.inf, -np.inf, 0], np.float32)], LABELS, {}, NONE)
    with pytest.raises(ProcessingError, match="NaN"):
        post([np.array([3e38, 3e38, 0], np.float32) * np.float32(10)], LABELS, {}, NONE)
