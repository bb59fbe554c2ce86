"""Fidelity and accuracy metrics: how close a compiled model is to the float one, and to labels.

- classification: top-1 agreement with the float model; top-1 accuracy against labels
- multilabel: per-label agreement with the float model; mean per-label F1 against labels
- detection: mAP@0.5 of the compiled model's detections, taking the float model's
  detections as ground truth (VOC all-point interpolated AP per class, mean over classes
  the float model found)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.postprocess import Prediction

Box = tuple[float, float, float, float]


def iou(a: Box, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` with each row of ``b`` (x0, y0, x1, y1)."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a + area_b - inter, 1e-9))


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def detection_map(reference: Sequence[Prediction], candidate: Sequence[Prediction], threshold: float = 0.5) -> float:
    """mAP@threshold of ``candidate`` against ``reference`` detections (same images, same order)."""
    labels = sorted({d.label for p in reference for d in p.detections})
    if not labels:
        return 1.0 if not any(p.detections for p in candidate) else 0.0
    aps = []
    for label in labels:
        truth = [np.array([d.box for d in p.detections if d.label == label and d.box], np.float32).reshape(-1, 4)
                 for p in reference]
        used = [np.zeros(len(t), bool) for t in truth]
        found = sorted(((d.score, i, d.box) for i, p in enumerate(candidate) for d in p.detections
                        if d.label == label and d.box), key=lambda x: -x[0])
        hits = np.zeros(len(found))
        for k, (_, i, box) in enumerate(found):
            if len(truth[i]) == 0:
                continue
            overlaps = np.where(used[i], -1.0, iou(box, truth[i]))
            best = int(np.argmax(overlaps))
            if overlaps[best] >= threshold:
                used[i][best] = True
                hits[k] = 1
        total = sum(len(t) for t in truth)
        tp = np.cumsum(hits)
        recall = tp / total
        precision = tp / np.arange(1, len(found) + 1) if found else np.zeros(0)
        aps.append(average_precision(recall, precision) if found else 0.0)
    return float(np.mean(aps))


def top1_agreement(reference: Sequence[Prediction], candidate: Sequence[Prediction]) -> float:
    same = [int(np.argmax(r.scores)) == int(np.argmax(c.scores)) for r, c in zip(reference, candidate, strict=True)]
    return float(np.mean(same)) if same else 1.0


def label_agreement(reference: Sequence[Prediction], candidate: Sequence[Prediction], labels: Sequence[str]) -> float:
    """Fraction of (image, label) decisions on which both models agree."""
    if not reference:
        return 1.0
    agree = [(label in r.labels) == (label in c.labels) for r, c in zip(reference, candidate, strict=True)
             for label in labels]
    return float(np.mean(agree))


def multilabel_f1(predictions: Sequence[Prediction], truth: np.ndarray, labels: Sequence[str]) -> float:
    """Mean per-label F1 against a 0/1 truth matrix [images, labels]."""
    pred = np.array([[label in p.labels for label in labels] for p in predictions], bool).reshape(truth.shape)
    real = truth > 0.5
    tp = (pred & real).sum(0)
    fp = (pred & ~real).sum(0)
    fn = (~pred & real).sum(0)
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))


def top1_accuracy(predictions: Sequence[Prediction], truth: np.ndarray) -> float:
    return float(np.mean([int(np.argmax(p.scores)) == int(t) for p, t in zip(predictions, truth, strict=True)]))
