"""Inventory changes: what came and went between one capture of a source and the next.

The tracker keeps, per source, how many of each label it believes are there. A capture changes
that belief only past a hysteresis band, so a score wandering around one threshold does not make
an item flap in and out: a label's count rises to the number of its items scoring at least
``enter``, and falls to the number still scoring at least ``exit`` (``exit <= enter``). For a
detector the items are its boxes (counts per label); for a multilabel (or single-label) model each
label is one item with the label's score. The first capture of a source adds everything it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.postprocess import Prediction


@dataclass(frozen=True)
class Change:
    label: str
    count: int  # how many came (added) or went (removed)
    score: float  # the label's best score in this capture, 0 if none
    total: int  # how many the source holds now


@dataclass(frozen=True)
class Changes:
    added: tuple[Change, ...]
    removed: tuple[Change, ...]


def item_scores(prediction: Prediction, labels: Sequence[str]) -> dict[str, list[float]]:
    """Label -> the score of each of its items: boxes for a detector, the label's score otherwise."""
    if any(d.box is not None for d in prediction.detections) or len(prediction.scores) != len(labels):
        out: dict[str, list[float]] = {}
        for d in prediction.detections:
            out.setdefault(d.label, []).append(d.score)
        return out
    return {label: [float(s)] for label, s in zip(labels, prediction.scores, strict=True)}


class InventoryTracker:
    def __init__(self, enter: float = 0.5, exit: float = 0.35, max_sources: int = 64) -> None:
        if exit > enter:
            raise ValueError(f"the exit threshold {exit} must not be above the enter threshold {enter}")
        self.enter, self.exit, self.max_sources = enter, exit, max_sources
        self.held: dict[str, dict[str, int]] = {}  # source -> label -> count believed there

    def reset(self) -> None:
        """Forget every source (another model: its labels and scores are not comparable)."""
        self.held.clear()

    def update(self, source: str, prediction: Prediction, labels: Sequence[str]) -> Changes | None:
        """Fold one capture of ``source`` in; what was added and removed, or None if nothing changed."""
        held = self.held.pop(source, {})
        self.held[source] = held  # most recently updated last: the oldest source is forgotten first
        for old in list(self.held)[: -self.max_sources]:
            del self.held[old]
        scores = item_scores(prediction, labels)
        added, removed = [], []
        for label in sorted(set(held) | set(scores)):
            items = scores.get(label, [])
            strong = sum(s >= self.enter for s in items)
            weak = sum(s >= self.exit for s in items)
            before = held.get(label, 0)
            now = strong if strong > before else weak if weak < before else before
            best = max(items, default=0.0)
            if now > before:
                added.append(Change(label, now - before, best, now))
            elif now < before:
                removed.append(Change(label, before - now, best, now))
            if now:
                held[label] = now
            else:
                held.pop(label, None)
        return Changes(tuple(added), tuple(removed)) if added or removed else None
