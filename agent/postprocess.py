"""Model outputs -> predictions, by the postprocessor the manifest names (a registry).

Every postprocessor returns a :class:`Prediction`: labels with scores (and boxes for
detectors) plus an inventory, the count per label, which is what an appliance shows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from pydantic import JsonValue

from agent.errors import ProcessingError
from agent.preprocess import Letterbox

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    np = lazy("numpy")

Outputs: TypeAlias = "Sequence[npt.NDArray[np.generic]]"


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class Prediction:
    detections: tuple[Detection, ...]
    scores: npt.NDArray[np.float32] = field(repr=False)  # per-label top score, for telemetry and agreement

    @property
    def inventory(self) -> dict[str, int]:
        return dict(Counter(d.label for d in self.detections))

    @property
    def labels(self) -> set[str]:
        return {d.label for d in self.detections}


Postprocessor = Callable[[Outputs, Sequence[str], Mapping[str, JsonValue], Letterbox], Prediction]
POSTPROCESSORS: dict[str, Postprocessor] = {}


def register(name: str) -> Callable[[Postprocessor], Postprocessor]:
    def wrap(fn: Postprocessor) -> Postprocessor:
        POSTPROCESSORS[name] = fn
        return fn

    return wrap


def get(name: str) -> Postprocessor:
    try:
        return POSTPROCESSORS[name]
    except KeyError:
        raise ProcessingError(
            f"postprocessor {name!r} is not known to this agent (known: {', '.join(sorted(POSTPROCESSORS))}); "
            "upgrade the agent or recompile the bundle"
        ) from None


def _scores(outputs: Outputs, labels: Sequence[str]) -> npt.NDArray[np.float32]:
    if not outputs:
        raise ProcessingError("the model returned no outputs")
    scores = np.asarray(outputs[0], np.float32).reshape(-1)
    if scores.size != len(labels):
        raise ProcessingError(f"the model gave {scores.size} scores for {len(labels)} labels")
    # one reduction instead of an elementwise test: a float64 sum of float32 values cannot overflow,
    # so it is finite exactly when every score is (NaN and infinities carry through the sum)
    if not math.isfinite(scores.sum(dtype=np.float64)):
        raise ProcessingError("the model output contains NaN or infinity")
    return scores


def number(params: Mapping[str, JsonValue], key: str, default: float) -> float:
    value = params.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProcessingError(f"postprocessor parameter {key!r} must be a number, got {value!r}")
    return float(value)


@register("topk")
def topk(outputs: Outputs, labels: Sequence[str], params: Mapping[str, JsonValue], _: Letterbox) -> Prediction:
    """Single-label classification: the ``k`` best labels above ``min_score``."""
    scores = _scores(outputs, labels)
    if params.get("softmax", False):
        e = np.exp(scores - scores.max())
        scores = (e / e.sum()).astype(np.float32)
    k, floor = int(number(params, "k", 1)), number(params, "min_score", 0.0)
    order = np.argsort(-scores)[:k]
    return Prediction(tuple(Detection(labels[i], float(scores[i])) for i in order if scores[i] >= floor), scores)


_THRESHOLDS: dict[int, tuple[object, object, npt.NDArray[np.float32]]] = {}


def _thresholds(labels: Sequence[str], params: Mapping[str, JsonValue]) -> npt.NDArray[np.float32]:
    """Each label's threshold as float32 (numpy compares a float32 score with a Python float in float32),
    checked and built once per parameter set: the same ``params`` and ``labels`` objects (a model's,
    on every frame) find it again by identity; the cache holds them, so an identity is never reused."""
    known = _THRESHOLDS.get(id(params))
    if known is not None and known[0] is params and known[1] is labels:
        return known[2]
    default = number(params, "threshold", 0.5)
    per_label = params.get("thresholds", {})
    if not isinstance(per_label, dict):
        raise ProcessingError("postprocessor parameter 'thresholds' must map label -> threshold")
    values = np.asarray([number(per_label, label, default) for label in labels], np.float32)
    if len(_THRESHOLDS) >= 16:  # a few models at a time (active, shadow, self-test): forget the oldest
        del _THRESHOLDS[next(iter(_THRESHOLDS))]
    _THRESHOLDS[id(params)] = (params, labels, values)
    return values


@register("multilabel")
def multilabel(outputs: Outputs, labels: Sequence[str], params: Mapping[str, JsonValue], _: Letterbox) -> Prediction:
    """Independent per-label scores (already sigmoid-ed), each with its own threshold."""
    scores = _scores(outputs, labels)
    hits = (scores >= _thresholds(labels, params)).nonzero()[0].tolist()
    values = scores.tolist()
    return Prediction(tuple(Detection(labels[i], values[i]) for i in hits), scores)


def _load_builtin() -> None:
    """Postprocessors defined in other modules register themselves on import."""
    import agent.detection  # noqa: F401


_load_builtin()


def prediction_json(prediction: Prediction, labels: Sequence[str]) -> dict[str, object]:
    """A prediction as firmware reads it (``coldchain agent infer --json``): every detection with its
    box (frame pixels, x0 y0 x1 y1; None for a whole-image label), the inventory, and the score of
    every label of the model, not only those above the threshold."""
    scores = np.asarray(prediction.scores, np.float32).ravel()
    return {"detections": [{"label": d.label, "score": round(float(d.score), 6),
                            "box": None if d.box is None else [round(float(v), 2) for v in d.box]}
                           for d in prediction.detections],
            "inventory": prediction.inventory,
            "scores": {label: round(float(scores[i]), 6) if i < scores.size else None
                       for i, label in enumerate(labels)}}
