"""A telemetry window: what a device saw and did during ``window_start``..``window_end``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from contract.base import ContractModel, Count, Epoch, Identifier, LabelCounts, Message, UtcDatetime
from contract.common import BundleRef, Histogram, LatencyStats

INPUT_STATISTICS = ("brightness", "contrast", "saturation")
"""Per-frame input statistics a device histograms (values 0..255 in 8-bit units)."""


class InputStats(ContractModel):
    """Histograms per input statistic (keys from INPUT_STATISTICS) and their means."""

    histograms: Annotated[dict[str, Histogram], Field(max_length=16)] = {}
    means: Annotated[dict[str, float], Field(max_length=16)] = {}


class Resources(ContractModel):
    cpu_percent: Annotated[float, Field(ge=0)]
    rss_bytes: Count


class SpoolStats(ContractModel):
    """The device's telemetry spool (this epoch): windows waiting for the cloud's ack, and windows
    the device had to drop unsent because the spool was full (a running total, never silent)."""

    pending: Count = 0
    evicted: Count = 0


class Telemetry(Message):
    device_id: Identifier
    seq: Count  # per (device, spool epoch), strictly increasing; the receiver de-duplicates on all three
    epoch: Epoch | None = None  # the spool's epoch; None from agents that predate epochs
    window_start: UtcDatetime
    window_end: UtcDatetime
    bundle: BundleRef | None = None
    inferences: Count = 0
    frames_skipped: LabelCounts = {}  # bad frames by kind: truncated, empty, depth, too_large, ...
    errors: LabelCounts = {}  # inference errors by kind
    latency_ms: LatencyStats | None = None  # per frame: preprocess + inference + postprocess
    model_latency_ms: LatencyStats | None = None  # the runtime call alone: comparable with the manifest's
    predictions: LabelCounts = {}  # how often each label was predicted
    inventory: LabelCounts = {}  # count per label in the latest frame
    input_stats: InputStats = InputStats()
    score_histogram: Histogram | None = None  # top scores, for prediction drift
    resources: Resources | None = None
    spool: SpoolStats = SpoolStats()

    @model_validator(mode="after")
    def _window(self) -> Telemetry:
        if self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        return self
