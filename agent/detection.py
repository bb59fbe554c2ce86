"""Detection postprocessors: the ``nanodet`` decoder (GFL distribution boxes) with class-wise NMS.

NanoDet outputs, per stride (8, 16, 32 by default), class scores ``[1, P, C]`` (already
sigmoid-ed) and box distributions ``[1, P, 4 * (reg_max + 1)]``: per side (left, top, right,
bottom) ``reg_max + 1`` logits; softmax over the bins, expectation over bins 0..reg_max,
times the stride, is the distance from the grid point ``(x * stride, y * stride)``.
"""

from __future__ import annotations

import functools
import math
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


@functools.lru_cache(maxsize=16)  # a few models at a time
def _plan(shapes: tuple[tuple[int, ...], ...], classes: int, bins: int) -> tuple[tuple[int, int], ...]:
    """Which outputs are each level's scores and boxes, the largest level first."""
    scores = [i for i, shape in enumerate(shapes) if shape and shape[-1] == classes]
    boxes = [i for i, shape in enumerate(shapes) if shape and shape[-1] == 4 * bins]
    if not scores or len(scores) != len(boxes):
        raise ProcessingError(f"nanodet expects pairs of [*, {classes}] score and [*, {4 * bins}] box outputs, "
                              f"got shapes {shapes}")
    scores.sort(key=lambda i: math.prod(shapes[i]) // classes, reverse=True)  # stable, as sorting by len was
    boxes.sort(key=lambda i: math.prod(shapes[i]) // (4 * bins), reverse=True)
    return tuple(zip(scores, boxes, strict=True))


def _levels(outputs: Outputs, classes: int, bins: int) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Each level's scores [points, classes] and box logits [points, 4 * bins], the largest level first; which
    output is which is worked out once per model (output shapes), not per frame."""
    plan = _plan(tuple(tuple(o.shape) for o in outputs), classes, bins)

    def f32(o: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        return o if o.dtype == np.float32 else np.asarray(o, np.float32)  # type: ignore[return-value]

    return [(f32(outputs[s]).reshape(-1, classes), f32(outputs[b]).reshape(-1, 4 * bins)) for s, b in plan]


@functools.cache
def _project(bins: int) -> npt.NDArray[np.float32]:
    project = np.arange(bins, dtype=np.float32)  # the bins' distances, 0..reg_max
    project.flags.writeable = False  # shared by every frame
    return project


def decode_nanodet(outputs: Outputs, classes: int, strides: Sequence[int], reg_max: int, input_width: int,
                   threshold: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Boxes (x0, y0, x1, y1 in model-input pixels), scores and class ids above ``threshold``.

    Per level only the search for candidates; the decoding then runs once over the candidates of all
    levels, row by row and in the same dtypes as it did level by level, so the numbers are the same.
    Right after an inference every numpy call starts with cold caches (10-15 us each on the project's
    host instead of about 1), so the fewer calls the better: ~30 instead of ~75 for three levels."""
    bins = reg_max + 1
    levels = _levels(outputs, classes, bins)
    if len(levels) != len(strides):
        raise ProcessingError(f"nanodet has {len(levels)} output levels but {len(strides)} strides are configured")
    rows, regs = [], []
    centres: list[tuple[int, int]] = []
    scales: list[int] = []
    for (cls, reg), stride in zip(levels, strides, strict=True):
        # grid points with any class above the threshold: one vectorised comparison over all scores
        # and the few hits' rows, instead of a max over 80 classes for each of thousands of points
        hits = np.flatnonzero(cls.ravel() > threshold)
        if hits.size == 0:
            continue
        points = list(dict.fromkeys((hits // classes).tolist()))  # ascending (hits are), each once
        rows.append(cls[points])
        regs.append(reg[points])
        grid_w = math.ceil(input_width / stride)
        centres += [(p % grid_w * stride, p // grid_w * stride) for p in points]
        scales += [stride] * len(points)
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    candidates = np.concatenate(rows) if len(rows) > 1 else rows[0]
    logits = (np.concatenate(regs) if len(regs) > 1 else regs[0]).reshape(-1, 4, bins)
    logits = np.exp(logits - logits.max(axis=2, keepdims=True))
    # float32 throughout, the stride a float32 factor per row (level by level it was a Python int: the same)
    dist = (logits / logits.sum(axis=2, keepdims=True)) @ _project(bins) * np.asarray(scales, np.float32)[:, None]
    centre = np.asarray(centres, np.float64)  # grid point x, y; the box sides in float64, then float32, as before
    boxes = np.concatenate([centre - dist[:, :2], centre + dist[:, 2:]], axis=1)
    return boxes.astype(np.float32), candidates.max(axis=1), candidates.argmax(axis=1).astype(np.int64)


def nms(boxes: npt.NDArray[np.float32], values: list[float], ids: list[int], iou: float, limit: int) -> list[int]:
    """Class-wise non-maximum suppression of ``boxes`` (x0, y0, x1, y1) with their scores and class ids as Python
    lists (exact copies of the float32 scores); indices of the kept boxes, best first (ties in OpenCV's order)."""
    if len(boxes) == 0:
        return []
    xywh = boxes.copy()
    xywh[:, 2:] -= boxes[:, :2]  # width and height in float32
    found = cv2.dnn.NMSBoxesBatched(xywh.tolist(), values, ids, 0.0, iou)
    # Python's sort is stable, and -score orders Python floats (exact copies of the float32 scores) as numpy would
    return sorted(np.asarray(found).ravel().tolist(), key=lambda k: -values[k])[:limit]


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
    values, ids = scores.tolist(), classes.tolist()
    keep = nms(boxes, values, ids, number(params, "iou_threshold", 0.6), int(number(params, "max_detections", 100)))
    pad = np.array([place.pad_x, place.pad_y, place.pad_x, place.pad_y], np.float32)
    mapped = ((boxes[keep] - pad) / np.float32(place.scale)).tolist()  # float32 arithmetic, then exact Python floats
    if place.frame_width and place.frame_height:
        # clipping is exact: in Python floats it gives np.clip's float32 values (the limits as float32 would be)
        w, h = np.array([place.frame_width, place.frame_height], np.float32).tolist()
        mapped = [[min(max(b[0], 0.0), w), min(max(b[1], 0.0), h), min(max(b[2], 0.0), w), min(max(b[3], 0.0), h)]
                  for b in mapped]
    kept_scores, kept_classes = [values[k] for k in keep], [ids[k] for k in keep]
    best = [0.0] * len(labels)  # each label's top score; exact in Python floats, float32 again below
    for score, cls in zip(kept_scores, kept_classes, strict=True):
        best[cls] = max(best[cls], score)
    # Python floats, no numpy scalar per detection and no numpy call that only a few frames' paths would warm
    detections = tuple(Detection(labels[c], s, (b[0], b[1], b[2], b[3])) for b, s, c in
                       zip(mapped, kept_scores, kept_classes, strict=True))
    return Prediction(detections, np.asarray(best, np.float32))
