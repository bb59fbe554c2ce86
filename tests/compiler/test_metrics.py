from __future__ import annotations

import numpy as np
import pytest

from agent.postprocess import Detection, Prediction
from compiler.metrics import detection_map, label_agreement, multilabel_f1, top1_agreement


def _p(*dets: tuple[str, float, tuple[float, float, float, float]]) -> Prediction:
    return Prediction(tuple(Detection(label, score, box) for label, score, box in dets), np.zeros(2, np.float32))


REF = [_p(("cup", 0.9, (0, 0, 10, 10)), ("apple", 0.5, (20, 20, 30, 30))), _p(("cup", 0.7, (5, 5, 15, 15)))]


def test_identical_detections_score_one() -> None:
    assert detection_map(REF, REF) == 1.0


def test_missed_and_shifted_boxes_cost() -> None:
    missing = [_p(("cup", 0.9, (0, 0, 10, 10))), _p(("cup", 0.7, (5, 5, 15, 15)))]
    assert detection_map(REF, missing) == pytest.approx(0.5)  # cup AP 1, apple AP 0
    shifted = [_p(("cup", 0.9, (0, 0, 10, 10)), ("apple", 0.5, (26, 26, 36, 36))), REF[1]]  # IoU < 0.5
    assert detection_map(REF, shifted) == pytest.approx(0.5)
    wrong_label = [_p(("cup", 0.9, (0, 0, 10, 10)), ("orange", 0.5, (20, 20, 30, 30))), REF[1]]
    assert detection_map(REF, wrong_label) == pytest.approx(0.5)


def test_low_scored_false_positives_rank_below() -> None:
    extra = [_p(*REF[0].detections and [("cup", 0.9, (0, 0, 10, 10)), ("apple", 0.5, (20, 20, 30, 30)),
                                        ("apple", 0.1, (50, 50, 60, 60))]), REF[1]]
    assert detection_map(REF, extra) == 1.0  # ranked after every true box: AP unchanged


def test_nothing_to_find() -> None:
    empty = [_p(), _p()]
    assert detection_map(empty, empty) == 1.0
    assert detection_map(empty, REF) == 0.0


def test_agreements_and_f1() -> None:
    a = Prediction((Detection("x", 0.9),), np.array([0.9, 0.1], np.float32))
    b = Prediction((Detection("y", 0.8),), np.array([0.2, 0.8], np.float32))
    assert top1_agreement([a, a], [a, b]) == 0.5
    assert label_agreement([a], [b], ["x", "y"]) == 0.0
    assert label_agreement([a], [a], ["x", "y"]) == 1.0
    truth = np.array([[1, 0], [0, 1]], np.float32)
    assert multilabel_f1([a, b], truth, ["x", "y"]) == 1.0
    assert multilabel_f1([b, a], truth, ["x", "y"]) == 0.0
