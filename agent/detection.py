"""Detection postprocessors: the ``nanodet`` decoder (GFL distribution boxes) with class-wise NMS.

NanoDet outputs, per stride (8, 16, 32 by default), class scores ``[1, P, C]`` (already
sigmoid-ed) and box distributions ``[1, P, 4 * (reg_max + 1)]``: per side (left, top, right,
bottom) ``reg_max + 1`` logits; softmax over the bins, expectation over bins 0..reg_max,
times the stride, is the distance from the grid point ``(x * stride, y * stride)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import JsonValue

from agent.errors import ProcessingError
from agent.postprocess import Detection, Outputs, Prediction, number, register
from agent.preprocess import Letterbox

if TYPE_CHECKING:
    import cv2
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    cv2 = lazy("cv2")
    np = lazy("numpy")


def _levels(outputs: Outputs, classes: int, bins: int) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    scores = [np.asarray(o, np.float32).reshape(-1, classes) for o in outputs if o.shape[-1] == classes]
    boxes = [np.asarray(o, np.float32).reshape(-1, 4 * bins) for o in outputs if o.shape[-1] == 4 * bins]
    if not scores or len(scores) != len(boxes):
        raise ProcessingError(f"nanodet expects pairs of [*, {classes}] score and [*, {4 * bins}] box outputs, "
                              f"got shapes {[tuple(o.shape) for o in outputs]}")
    scores.sort(key=len, reverse=True)
    boxes.sort(key=len, reverse=True)
    return list(zip(scores, boxes, strict=True))


def decode_nanodet(outputs: Outputs, classes: int, strides: Sequence[int], reg_max: int, input_width: int,
                   threshold: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Boxes (x0, y0, x1, y1 in model-input pixels), scores and class ids above ``threshold``."""
    bins = reg_max + 1
    levels = _levels(outputs, classes, bins)
    if len(levels) != len(strides):
        raise ProcessingError(f"nanodet has {len(levels)} output levels but {len(strides)} strides are configured")
    all_boxes, all_scores, all_classes = [], [], []
    project = np.arange(bins, dtype=np.float32)
    for (cls, reg), stride in zip(levels, strides, strict=True):
        # grid points with any class above the threshold: one vectorised comparison over all scores
        # and the few hits' rows, instead of a max over 80 classes for each of thousands of points
        hits = np.flatnonzero(cls.ravel() > threshold)
        if hits.size == 0:
            continue
        idx = np.unique(hits // classes)
        candidates = cls[idx]
        logits = reg[idx].reshape(-1, 4, bins)
        logits = np.exp(logits - logits.max(axis=2, keepdims=True))
        dist = (logits / logits.sum(axis=2, keepdims=True)) @ project * stride
        grid_w = int(np.ceil(input_width / stride))
        cy, cx = np.divmod(idx, grid_w)
        cx, cy = cx * stride, cy * stride
        all_boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        all_scores.append(candidates.max(axis=1))
        all_classes.append(candidates.argmax(axis=1))
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return (np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32),
            np.concatenate(all_classes).astype(np.int64))


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], classes: npt.NDArray[np.int64],
        iou: float, limit: int) -> npt.NDArray[np.int64]:
    """Class-wise non-maximum suppression; indices of the kept boxes, best first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    found = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.0, iou)
    keep = np.asarray(found, np.int64).reshape(-1)
    best_first: npt.NDArray[np.int64] = keep[np.argsort(-scores[keep], kind="stable")][:limit]
    return best_first


def _ints(params: Mapping[str, JsonValue], key: str, default: list[int]) -> list[int]:
    value = params.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ProcessingError(f"postprocessor parameter {key!r} must be a list of integers, got {value!r}")
    return [int(v) for v in value if isinstance(v, int)]


@register("nanodet")
def nanodet(outputs: Outputs, labels: Sequence[str], params: Mapping[str, JsonValue], place: Letterbox) -> Prediction:
    strides = _ints(params, "strides", [8, 16, 32])
    width = int(number(params, "input_width", 416))
    boxes, scores, classes = decode_nanodet(outputs, len(labels), strides, int(number(params, "reg_max", 7)), width,
                                            number(params, "score_threshold", 0.35))
    keep = nms(boxes, scores, classes, number(params, "iou_threshold", 0.6), int(number(params, "max_detections", 100)))
    pad = np.array([place.pad_x, place.pad_y, place.pad_x, place.pad_y], np.float32)
    boxes = ((boxes[keep] - pad) / np.float32(place.scale)).astype(np.float32)
    if place.frame_width and place.frame_height:
        limit = np.array([place.frame_width, place.frame_height] * 2, np.float32)
        boxes = np.clip(boxes, np.float32(0), limit).astype(np.float32)
    per_label = np.zeros(len(labels), np.float32)
    detections = []
    for box, score, cls in zip(boxes, scores[keep], classes[keep], strict=True):
        per_label[cls] = max(per_label[cls], score)
        detections.append(Detection(labels[cls], float(score), (float(box[0]), float(box[1]), float(box[2]),
                                                                  float(box[3]))))
    return Prediction(tuple(detections), per_label)
