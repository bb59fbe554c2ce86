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
