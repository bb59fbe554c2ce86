"""Evaluations are the compile's cost: count them, and never run the same model on the same
images twice.

An evaluation runs a model over the whole evaluation set through the agent's code. The
cache keys it by the sha256 of the model file's bytes, the identity of the image set and the
io spec (preprocessing, postprocessor), so a candidate the search builds twice (the same
exclusion set reached two ways, a pass that changed nothing, the float model of a second
target in the same compile) is evaluated once. Only the predictions are kept (never raw
outputs: a detector's are megabytes per image), and at most ``max_entries`` of them, oldest
evicted first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from agent.postprocess import Prediction
from contract.manifest import IOSpec


@dataclass(frozen=True)
class Evaluation:
    """A model's predictions on the evaluation set: at the deployed thresholds, and (detection)
    ranked from a low score threshold, as mAP evaluation needs."""

    predictions: list[Prediction]
    ranked: list[Prediction] | None = None


@dataclass
class Counts:
    evaluations: int = 0  # whole evaluation-set runs
    images: int = 0  # model runs they took
    cache_hits: int = 0  # evaluations the cache answered
    screenings: int = 0  # candidates screened on a few calibration frames instead
    screened_frames: int = 0
    sensitivity: int = 0  # per-node sensitivity analyses (a few calibration frames, every node's output)

    @property
    def text(self) -> str:
        return (f"{self.evaluations} evaluations ({self.images} images), {self.cache_hits} cache hits, "
                f"{self.screenings} screenings ({self.screened_frames} frames), {self.sensitivity} sensitivity runs")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EvaluationCache:
    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError("the evaluation cache needs room for at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Evaluation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(model: Path, images: str, io: IOSpec) -> str:
        """``images``: the evaluation set's identity (ImageSet.sha256)."""
        spec = io.model_dump_json(include={"preprocessing", "postprocessor", "task", "labels"})
        return hashlib.sha256(f"{file_sha256(model)}\n{images}\n{spec}".encode()).hexdigest()

    def get(self, key: str) -> Evaluation | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, evaluation: Evaluation) -> None:
        self._entries[key] = evaluation
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
