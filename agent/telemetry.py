"""One telemetry window: what the device saw and did, aggregated until the window closes."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from agent import stats
from agent.postprocess import Prediction
from contract.common import BundleRef, LatencyStats
from contract.telemetry import InputStats, Resources, SpoolStats, Telemetry

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


def _stats(values_ms: list[float]) -> LatencyStats | None:
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    return LatencyStats(p50=float(np.percentile(values, 50)), p95=float(np.percentile(values, 95)),
                        p99=float(np.percentile(values, 99)), mean=float(values.mean()), max=float(values.max()))


@dataclass
class Window:
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    inferences: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    non_finite: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)  # the runtime call alone
    predictions: Counter[str] = field(default_factory=Counter)
    inventory: dict[str, int] = field(default_factory=dict)
    frames: list[dict[str, float]] = field(default_factory=list)
    top_scores: list[float] = field(default_factory=list)

    def frame_skipped(self, kind: str) -> None:
        self.skipped[kind] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def inferred(self, frame: npt.NDArray[np.uint8], prediction: Prediction, latency_ms: float,
                 model_ms: float | None = None, seen: npt.NDArray[np.uint8] | None = None) -> None:
        """One inference; input statistics from ``seen`` (what the model saw: ``Inference.seen``), else
        from the frame itself."""
        self.inferences += 1
        self.latencies_ms.append(latency_ms)
        if model_ms is not None:
            self.model_ms.append(model_ms)
        self.predictions.update(prediction.labels)
        self.inventory = prediction.inventory
        self.frames.append(stats.frame_stats(frame if seen is None else seen))
        self.top_scores.append(float(np.max(prediction.scores)) if prediction.scores.size else 0.0)

    def p95(self) -> float | None:
        """p95 of the model alone (what the manifest's compiled latency measures), else of the frame."""
        values = self.model_ms or self.latencies_ms
        return float(np.percentile(values, 95)) if values else None

    def close(self, device_id: str, seq: int, epoch: str, bundle: BundleRef | None, pending: int,
              evicted: int) -> Telemetry:
        means = {k: float(np.mean([f[k] for f in self.frames])) for k in stats.EDGES} if self.frames else {}
        return Telemetry(
            device_id=device_id, seq=seq, epoch=epoch, window_start=self.started, window_end=datetime.now(timezone.utc),
            bundle=bundle,
            inferences=self.inferences, frames_skipped=dict(self.skipped), errors=dict(self.errors),
            latency_ms=_stats(self.latencies_ms), model_latency_ms=_stats(self.model_ms),
            predictions=dict(self.predictions), inventory=self.inventory,
            input_stats=InputStats(histograms=stats.input_histograms(self.frames) if self.frames else {}, means=means),
            score_histogram=stats.histogram(self.top_scores, stats.SCORE_EDGES) if self.top_scores else None,
            resources=_resources(), spool=SpoolStats(pending=pending, evicted=evicted),
        )
