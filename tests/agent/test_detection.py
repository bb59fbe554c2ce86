from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import postprocess
from agent.errors import ProcessingError
from agent.preprocess import Letterbox, preprocess
from agent.runtimes import open_runtime
from compiler.description import load_description

NANODET_DESCRIPTION = Path(__file__).parents[2] / "examples" / "nanodet" / "model.yaml"
LABELS = ["a", "b"]


def _outputs(score_at: dict[tuple[int, int], float], dist_bins: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Two levels (strides 8 and 16 over a 32x32 input) with one hot grid point."""
    outs = []
    for stride in (8, 16):
        grid = 32 // stride
        cls = np.zeros((1, grid * grid, 2), np.float32)
        reg = np.full((1, grid * grid, 32), -20.0, np.float32)
        for (level, index), score in score_at.items():
            if level == stride:
                cls[0, index, 1] = score
                for side, b in enumerate(dist_bins):
                    reg[0, index, side * 8 + b] = 20.0  # softmax puts all weight on bin b
        outs += [cls, reg]
    return outs


def test_nanodet_decoding_geometry() -> None:
    post = postprocess.get("nanodet")
    # level 8, grid 4x4: index 5 is (x=1, y=1) -> centre (8, 8); distances 1,2,3,1 bins x 8 px
    outputs = _outputs({(8, 5): 0.9}, (1, 2, 3, 1))
    pred = post(outputs, LABELS, {"strides": [8, 16], "input_width": 32, "score_threshold": 0.3},
                Letterbox(0.5, 0.0, 4.0, 64, 48))
    (det,) = pred.detections
    assert det.label == "b" and det.score == pytest.approx(0.9)
    # input box (0, -8, 32, 16) -> frame: (x - 0) / 0.5, (y - 4) / 0.5, clipped to 64x48
    assert det.box == pytest.approx((0.0, 0.0, 64.0, 24.0))
    assert pred.inventory == {"b": 1}


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    post = postprocess.get("nanodet")
    outputs = _outputs({(8, 5): 0.9, (8, 6): 0.8}, (2, 2, 2, 2))  # neighbours, IoU 0.6 > 0.5
    pred = post(outputs, LABELS, {"strides": [8, 16], "input_width": 32, "iou_threshold": 0.5},
                Letterbox(1.0, 0.0, 0.0))
    assert [d.score for d in pred.detections] == [pytest.approx(0.9)]


def test_wrong_outputs_are_named() -> None:
    with pytest.raises(ProcessingError, match="pairs of"):
        postprocess.get("nanodet")([np.zeros((1, 4, 3))], LABELS, {}, Letterbox(1.0, 0.0, 0.0))


@pytest.mark.parametrize(("photo", "label", "low", "high"), [
    ("Fruit/Orange/Orange_001.jpg", "orange", 0.55, 0.75),
    ("Fruit/Banana/Banana_001.jpg", "banana", 0.45, 0.80),
])
def test_real_nanodet_on_real_photos(shared_data: Path, photo: str, label: str, low: float, high: float) -> None:
    description = load_description(NANODET_DESCRIPTION)
    runtime = open_runtime("onnxruntime", shared_data / "nanodet" / "object_detection_nanodet_2022nov.onnx", 2)
    frame = cv2.imread(str(shared_data / "grocery" / "val" / photo))
    x, place = preprocess(frame, description.preprocessing)
    pred = postprocess.get("nanodet")(runtime.run({"input.1": x}), description.labels,
                                      description.postprocessor.params, place)
    best = max(pred.detections, key=lambda d: d.score)
    assert best.label == label and low <= best.score <= high
    h, w = frame.shape[:2]
    assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in pred.detections if d.box)


def test_decoding_keeps_exactly_the_points_whose_best_class_passes_the_threshold() -> None:
    """The pre-filter (any score above the threshold, then the class max of those points only) decodes
    what a max over every point's classes would: same points, best scores and classes, strictly above."""
    from agent.detection import decode_nanodet

    rng = np.random.default_rng(3)
    classes, bins = 5, 8
    outputs = []
    for grid in (8, 4):
        cls = (rng.random((1, grid * grid, classes)) ** 8).astype(np.float32)  # mostly low, a few high
        cls[0, 0, 2] = 0.35  # exactly at the threshold: not kept
        cls[0, 1, :] = 0.6  # a tie: the first class wins, as argmax does
        outputs += [cls, rng.normal(size=(1, grid * grid, 4 * bins)).astype(np.float32)]
    boxes, scores, ids = decode_nanodet(outputs, classes, [8, 16], bins - 1, 64, 0.35)
    expected_scores, expected_ids = [], []
    for cls in outputs[::2]:
        flat = cls.reshape(-1, classes)
        for point in range(len(flat)):
            if flat[point].max() > 0.35:
                expected_scores.append(flat[point].max())
                expected_ids.append(int(np.argmax(flat[point])))
    assert scores.tolist() == expected_scores and ids.tolist() == expected_ids and len(boxes) == len(scores)
    assert 0 < len(scores) < 80 and 0 in ids.tolist()
