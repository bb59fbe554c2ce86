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
    with pytest.raises(ProcessingError, match="pairs of"):  # a scalar output: named, not an IndexError
        postprocess.get("nanodet")([np.zeros(()), np.zeros((1, 4, 2))], LABELS, {}, Letterbox(1.0, 0.0, 0.0))


def test_which_output_is_which_is_worked_out_per_set_of_shapes() -> None:
    """The plan of outputs is kept per model (shapes): outputs given in another order, or in float16, decode
    as the same outputs in float32 in the usual order do."""
    post = postprocess.get("nanodet")
    params = {"strides": [8, 16], "input_width": 32, "score_threshold": 0.3}
    outputs = _outputs({(8, 5): 0.75, (16, 2): 0.625}, (1, 2, 3, 1))  # exact in float16
    expected = post(outputs, LABELS, params, Letterbox(1.0, 0.0, 0.0))
    assert len(expected.detections) == 2
    for _ in range(2):  # the second time from the kept plan
        assert _same(post(outputs[::-1], LABELS, params, Letterbox(1.0, 0.0, 0.0)), expected)
        half = [o.astype(np.float16) for o in outputs]
        assert _same(post(half, LABELS, params, Letterbox(1.0, 0.0, 0.0)), expected)


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


def _level_by_level(outputs: list[np.ndarray], labels: list[str], params: dict[str, object],
                    place: Letterbox) -> postprocess.Prediction:
    """The decoder as it was before it decoded all levels at once (main at 4c662c5), kept as the reference:
    per level the candidates' softmax, grid centres and boxes; numpy scalars per detection."""
    classes, bins, threshold = len(labels), 8, float(params.get("score_threshold", 0.35))  # type: ignore[arg-type]
    strides = params.get("strides", [8, 16, 32])
    width = int(params.get("input_width", 416))  # type: ignore[call-overload]
    scores_ = sorted((o.reshape(-1, classes) for o in outputs if o.shape[-1] == classes), key=len, reverse=True)
    regs_ = sorted((o.reshape(-1, 4 * bins) for o in outputs if o.shape[-1] == 4 * bins), key=len, reverse=True)
    all_boxes, all_scores, all_classes = [], [], []
    project = np.arange(bins, dtype=np.float32)
    for cls, reg, stride in zip(scores_, regs_, strides, strict=True):  # type: ignore[call-overload]
        hits = np.flatnonzero(cls.ravel() > threshold)
        if hits.size == 0:
            continue
        idx = np.unique(hits // classes)
        candidates = cls[idx]
        logits = reg[idx].reshape(-1, 4, bins)
        logits = np.exp(logits - logits.max(axis=2, keepdims=True))
        dist = (logits / logits.sum(axis=2, keepdims=True)) @ project * stride
        cy, cx = np.divmod(idx, int(np.ceil(width / stride)))
        cx, cy = cx * stride, cy * stride
        all_boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        all_scores.append(candidates.max(axis=1))
        all_classes.append(candidates.argmax(axis=1))
    per_label = np.zeros(classes, np.float32)
    if not all_boxes:
        return postprocess.Prediction((), per_label)
    boxes = np.concatenate(all_boxes).astype(np.float32)
    scores = np.concatenate(all_scores).astype(np.float32)
    ids = np.concatenate(all_classes).astype(np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    found = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), ids.tolist(), 0.0,
                                    float(params.get("iou_threshold", 0.6)))  # type: ignore[arg-type]
    keep = np.asarray(found, np.int64).reshape(-1)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:int(params.get("max_detections", 100))]  # type: ignore[call-overload]
    pad = np.array([place.pad_x, place.pad_y, place.pad_x, place.pad_y], np.float32)
    kept = ((boxes[keep] - pad) / np.float32(place.scale)).astype(np.float32)
    if place.frame_width and place.frame_height:
        limit = np.array([place.frame_width, place.frame_height] * 2, np.float32)
        kept = np.clip(kept, np.float32(0), limit).astype(np.float32)
    detections = []
    for box, score, cls in zip(kept, scores[keep], ids[keep], strict=True):
        per_label[cls] = max(per_label[cls], score)
        detections.append(postprocess.Detection(labels[cls], float(score), tuple(float(v) for v in box)))
    return postprocess.Prediction(tuple(detections), per_label)


def _same(a: postprocess.Prediction, b: postprocess.Prediction) -> bool:
    """Bit for bit: every detection's label, score and box, and the per-label scores."""
    same_scores = a.scores.dtype == b.scores.dtype and a.scores.tobytes() == b.scores.tobytes()
    return a.detections == b.detections and same_scores


def test_all_levels_at_once_decode_what_level_by_level_decoded() -> None:
    """Synthetic outputs with many candidates, overlapping boxes, tied scores and scores at the threshold:
    the decoder (one softmax over every level's candidates, fewer numpy calls) gives exactly the reference's
    boxes, scores and classes, and the postprocessor exactly its detections, order and per-label scores."""
    from agent.detection import decode_nanodet

    rng = np.random.default_rng(11)
    labels = [f"c{i}" for i in range(6)]
    for trial in range(20):
        # every detection (a limit of 1000) or the 100 best of hundreds (the model's default limit)
        params: dict[str, object] = {"strides": [8, 16, 32], "input_width": 96, "score_threshold": 0.35,
                                     "iou_threshold": 0.6, "max_detections": 1000 if trial % 2 else 100}
        outputs = []
        for grid in (12, 6, 3):
            cls = (rng.random((1, grid * grid, 6)) ** (2 + 4 * (trial % 5))).astype(np.float32)
            cls[0, rng.integers(0, grid * grid, 3), rng.integers(0, 6, 3)] = 0.35  # at the threshold: not kept
            cls[0, rng.integers(0, grid * grid, 4), :] = np.float32(0.7)  # ties across classes and points
            outputs += [cls, rng.normal(0, 2 + trial % 3, (1, grid * grid, 32)).astype(np.float32)]
        place = Letterbox(0.75 + trial / 40, float(trial % 4), float(trial % 3), 120, 110)
        assert _same(postprocess.get("nanodet")(outputs, labels, params, place),
                     _level_by_level(outputs, labels, params, place)), trial
        boxes, scores, ids = decode_nanodet(outputs, 6, [8, 16, 32], 7, 96, 0.35)
        assert boxes.dtype == np.float32 and scores.dtype == np.float32 and ids.dtype == np.int64
    empty = [np.zeros((1, 144, 6), np.float32), np.zeros((1, 144, 32), np.float32)]
    assert postprocess.get("nanodet")(empty, labels, {"strides": [8], "input_width": 96},
                                      Letterbox(1.0, 0.0, 0.0)).detections == ()


def test_real_nanodet_outputs_decode_as_level_by_level(shared_data: Path) -> None:
    """The real model on 40 grocery photos (15 detections per photo at the median): the same predictions,
    bit for bit, as the level-by-level reference."""
    description = load_description(NANODET_DESCRIPTION)
    runtime = open_runtime("onnxruntime", shared_data / "nanodet" / "object_detection_nanodet_2022nov.onnx", 2)
    photos = sorted((shared_data / "grocery" / "val").rglob("*.jpg"))[::7][:40]
    found = 0
    for photo in photos:
        x, place = preprocess(cv2.imread(str(photo)), description.preprocessing)
        outputs = [np.asarray(o) for o in runtime.run({"input.1": x})]
        params = dict(description.postprocessor.params)
        ours = postprocess.get("nanodet")(outputs, description.labels, params, place)
        assert _same(ours, _level_by_level(outputs, description.labels, params, place)), photo.name
        found += len(ours.detections)
    assert found > 100
