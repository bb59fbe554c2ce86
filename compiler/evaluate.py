"""Image sets and model evaluation, running exactly the device's code path.

Frames are decoded with OpenCV, preprocessed by ``agent.preprocess`` from the bundle's io
spec, run by an ``agent.runtimes`` runtime and postprocessed by the agent's postprocessor
registry: what is measured here is what the device does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent import postprocess
from agent.errors import AgentError
from agent.frames import IMAGE_SUFFIXES
from agent.model import LoadedModel
from agent.postprocess import Prediction
from agent.preprocess import Letterbox, preprocess
from compiler.description import ModelDescription
from compiler.errors import CalibrationError
from contract.manifest import IOSpec, Preprocessing, Task

LABELS_FILE = "labels.csv"


@dataclass
class ImageSet:
    paths: list[Path]
    frames: list[np.ndarray]
    truth: np.ndarray | None = None  # multilabel: [N, labels] 0/1; classification: [N] label index
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it was not usable
    _inputs: dict[str, tuple[list[dict[str, np.ndarray]], list[Letterbox]]] = field(default_factory=dict)
    _sha256: list[str] = field(default_factory=list)  # computed once

    @property
    def sha256(self) -> str:
        """Identity of the set: sha256 over the sorted sha256 of each file."""
        if not self._sha256:
            digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in self.paths)
            self._sha256.append(hashlib.sha256("\n".join(digests).encode()).hexdigest())
        return self._sha256[0]

    def inputs(self, spec: Preprocessing, input_name: str) -> tuple[list[dict[str, np.ndarray]], list[Letterbox]]:
        key = spec.model_dump_json() + input_name
        if key not in self._inputs:
            feeds, places = [], []
            for frame in self.frames:
                x, place = preprocess(frame, spec)
                feeds.append({input_name: x})
                places.append(replace(place, seen=None))  # the placed image is for input statistics only
            self._inputs[key] = (feeds, places)
        return self._inputs[key]

    def subset(self, indices: Sequence[int]) -> ImageSet:
        truth = None if self.truth is None else self.truth[list(indices)]
        return ImageSet([self.paths[i] for i in indices], [self.frames[i] for i in indices], truth)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_truth(folder: Path, paths: list[Path], labels: Sequence[str], task: Task) -> np.ndarray | None:
    table = folder / LABELS_FILE
    if not table.exists() or task is Task.DETECTION:
        return None
    rows = [line.split(",") for line in table.read_text().splitlines() if line.strip()]
    header, body = rows[0], {r[0]: r[1:] for r in rows[1:]}
    missing = [str(p.relative_to(folder)) for p in paths if str(p.relative_to(folder)) not in body]
    if missing:
        raise CalibrationError(f"{table} has no row for {len(missing)} images, e.g. {missing[0]}")
    if task is Task.MULTILABEL:
        if header[1:] != list(labels):
            raise CalibrationError(f"{table} columns {header[1:]} differ from the model's labels {list(labels)}")
        return np.array([[float(v) for v in body[str(p.relative_to(folder))]] for p in paths], np.float32)
    if len(header) != 2:
        raise CalibrationError(f"{table} has {len(header)} columns; for a classification model it must be "
                               "'file,label' (one label name per image)")
    index = {label: i for i, label in enumerate(labels)}
    try:
        return np.array([index[body[str(p.relative_to(folder))][0]] for p in paths], np.int64)
    except KeyError as exc:
        raise CalibrationError(f"{table} names label {exc} which the model does not have") from exc


def load_images(folder: Path, labels: Sequence[str], task: Task, what: str, minimum: int = 1) -> ImageSet:
    """Decode every image under ``folder``; unreadable ones are skipped and listed, never fatal alone."""
    paths = list_images(folder)
    kept, frames, skipped = [], [], {}
    for path in paths:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None or frame.size == 0:
            skipped[str(path)] = "not a decodable image"
            continue
        kept.append(path)
        frames.append(frame)
    if len(kept) < minimum:
        raise CalibrationError(f"{what} needs at least {minimum} readable images, {folder} has {len(kept)}"
                               f"{f' ({len(skipped)} unreadable)' if skipped else ''}")
    return ImageSet(kept, frames, _read_truth(folder, kept, labels, task), skipped)


def split(images: ImageSet, first: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """A reproducible random split: ``first`` images, and the rest."""
    order = list(range(len(images.paths)))
    random.Random(seed).shuffle(order)
    return images.subset(sorted(order[:first])), images.subset(sorted(order[first:]))


def image_sets(calibration: Path, evaluation: Path | None, count: int, seed: int,
               description: ModelDescription) -> tuple[ImageSet, ImageSet, int]:
    """Calibration and evaluation sets; without a separate evaluation folder, the calibration
    folder is split (``count`` images to calibrate, the rest to evaluate). Also: unreadable count."""
    labels, task = description.labels, description.task
    pool = load_images(calibration, labels, task, "calibration", minimum=min(8, count))
    if evaluation is None or evaluation.resolve() == calibration.resolve():
        if len(pool.paths) <= count:
            raise CalibrationError(f"{calibration} has {len(pool.paths)} images: with no separate evaluation folder "
                                   f"it needs more than the {count} used for calibration")
        cal, ev = split(pool, count, seed)
        return cal, ev, len(pool.skipped)
    cal = split(pool, count, seed)[0] if len(pool.paths) > count else pool
    ev = load_images(evaluation, labels, task, "evaluation")
    return cal, ev, len(pool.skipped) + len(ev.skipped)


@dataclass(frozen=True)
class Run:
    outputs: list[list[np.ndarray]]
    predictions: list[Prediction]


def run_model(model: LoadedModel, images: ImageSet) -> Run:
    """Every image through the agent's own path (``LoadedModel``); inputs are prepared once per set."""
    name = model.io.inputs[0].name
    feeds, places = images.inputs(model.io.preprocessing, name)
    try:
        results = [model.infer(feed[name], place) for feed, place in zip(feeds, places, strict=True)]
    except AgentError as exc:
        raise CalibrationError(f"the model's outputs cannot be postprocessed: {exc}") from exc
    return Run([r.outputs for r in results], [r.prediction for r in results])


def postprocess_all(outputs: list[list[np.ndarray]], io: IOSpec, places: list[Letterbox],
                    overrides: dict[str, Any] | None = None) -> list[Prediction]:
    post = postprocess.get(io.postprocessor.name)
    params = {**io.postprocessor.params, **(overrides or {})}
    try:
        return [post(out, io.labels, params, place) for out, place in zip(outputs, places, strict=True)]
    except AgentError as exc:
        raise CalibrationError(f"the model's outputs cannot be postprocessed: {exc}") from exc


def latency_ms(model: LoadedModel, x: np.ndarray, warmup: int = 5, iterations: int = 40) -> tuple[float, float]:
    """p50 and p95 of the model alone on one prepared input, in milliseconds."""
    times = model.time_runs(x, warmup, iterations)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))
