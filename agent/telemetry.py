"""One telemetry window: what the device saw and did, aggregated until the window closes."""

from __future__ import annotations

import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from agent import stats
from agent.postprocess import Prediction
from contract.common import BundleRef, LatencyStats
from contract.telemetry import INPUT_STATISTICS, InputStats, Resources, SpoolStats, Telemetry

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    np = lazy("numpy")


def _resources() -> Resources | None:
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process(os.getpid())
    return Resources(cpu_percent=process.cpu_percent(interval=None), rss_bytes=process.memory_info().rss)


def _stats(values_ms: array[float]) -> LatencyStats | None:
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    return LatencyStats(p50=float(np.percentile(values, 50)), p95=float(np.percentile(values, 95)),
                        p99=float(np.percentile(values, 99)), mean=float(values.mean()), max=float(values.max()))


def _column() -> array[float]:
    return array("d")


@dataclass
class Window:
    """Per frame it appends a few floats to preallocated columns (C doubles, ``array``) and counts the
    labels: no Python object per frame outlives the frame. Everything else is folded when it closes."""

    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    inferences: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    non_finite: int = 0
    latencies_ms: array[float] = field(default_factory=_column)
    model_ms: array[float] = field(default_factory=_column)  # the runtime call alone
    predictions: Counter[str] = field(default_factory=Counter)
    last: Prediction | None = None  # the window's inventory is the last prediction's
    inputs: tuple[array[float], ...] = field(default_factory=lambda: tuple(_column() for _ in INPUT_STATISTICS))
    top_scores: array[float] = field(default_factory=_column)

    def frame_skipped(self, kind: str) -> None:
        self.skipped[kind] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def inferred(self, frame: npt.NDArray[np.uint8], prediction: Prediction, latency_ms: float,
                 model_ms: float | None = None, seen: npt.NDArray[np.uint8] | None = None,
                 input_values: tuple[float, float, float] | None = None) -> None:
        """One inference; input statistics as given (``Inference.input_values``: taken by ``predict`` while the
        image was in cache), else from ``seen`` (what the model saw: ``Inference.seen``), else from the frame."""
        self.inferences += 1
        self.latencies_ms.append(latency_ms)
        if model_ms is not None:
            self.model_ms.append(model_ms)
        self.predictions.update({d.label for d in prediction.detections})
        self.last = prediction
        if input_values is None:
            input_values = stats.frame_values(frame if seen is None else seen)
        for column, value in zip(self.inputs, input_values, strict=True):
            column.append(value)
        self.top_scores.append(float(prediction.scores.max()) if prediction.scores.size else 0.0)

    @property
    def inventory(self) -> dict[str, int]:
        return {} if self.last is None else self.last.inventory

    def frame(self, i: int) -> dict[str, float]:
        """The input statistics of the window's ``i``-th frame, by name."""
        return {name: column[i] for name, column in zip(INPUT_STATISTICS, self.inputs, strict=True)}

    @property
    def judged_ms(self) -> array[float]:
        """The latencies a window is judged on: the model alone (what the manifest's compiled latency
        measures), else the whole frame."""
        return self.model_ms or self.latencies_ms

    def p95(self) -> float | None:
        values = self.judged_ms
        return float(np.percentile(values, 95)) if values else None

    def close(self, device_id: str, seq: int, epoch: str, bundle: BundleRef | None, pending: int,
              evicted: int) -> Telemetry:
        columns = dict(zip(INPUT_STATISTICS, self.inputs, strict=True))
        framed = bool(self.inputs[0])
        means = {k: float(np.mean(v)) for k, v in columns.items()} if framed else {}
        return Telemetry(
            device_id=device_id, seq=seq, epoch=epoch, window_start=self.started, window_end=datetime.now(timezone.utc),
            bundle=bundle,
            inferences=self.inferences, frames_skipped=dict(self.skipped), errors=dict(self.errors),
            latency_ms=_stats(self.latencies_ms), model_latency_ms=_stats(self.model_ms),
            predictions=dict(self.predictions), inventory=self.inventory,
            input_stats=InputStats(histograms=stats.column_histograms(columns) if framed else {}, means=means),
            score_histogram=stats.histogram(self.top_scores, stats.SCORE_EDGES) if self.top_scores else None,
            resources=_resources(), spool=SpoolStats(pending=pending, evicted=evicted),
        )
