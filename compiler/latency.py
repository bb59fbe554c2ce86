"""Honest compile-time latency: each candidate timed interleaved with the float reference.

A shared build host drifts: the same float model measured 13.8 ms in one run and 95 ms in
another. Timing the float model once and each candidate later turns that drift into a
"speed-up". Here every candidate is timed in rounds alternating with the float reference
(the order flips each round), and the figure reported is the median of the per-round
ratios with their interquartile range: whatever slows the host slows both alike.

The host (CPU model, cores, architecture) and the thread count go into the table title;
a target whose board is not this host (an ARM board measured on x86, a Jetson measured
with onnxruntime on the CPU) is labelled a proxy, never presented as the board's figure.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compiler.target import TargetProfile
from contract.common import Runtime

ROUNDS = 11


class Timed(Protocol):
    def time_runs(self, x: Any = None, warmup: int = 5, iterations: int = 40) -> list[float]: ...


@dataclass(frozen=True)
class Latency:
    p50_ms: float  # the candidate's median run time over every timed run
    p95_ms: float
    ratio: float  # median over rounds of (candidate / float reference), both timed in the same round
    ratio_low: float  # interquartile range of the per-round ratios
    ratio_high: float
    rounds: int
    # the range that decides between candidates (compiler.search): the per-round ratios' 10th to 90th
    # percentiles (of 11 rounds: all but the lowest and the highest). Two IQRs of 11 rounds of one
    # model fall apart in 2 % of runs on a noisy host; these ranges did not in 2,000 simulated ones
    ratio_floor: float
    ratio_ceiling: float

    @property
    def decisive(self) -> tuple[float, float]:
        """(floor, ceiling) of the ratio beyond the host's noise: what a choice may rely on."""
        return self.ratio_floor, self.ratio_ceiling

    @property
    def text(self) -> str:
        return f"{self.ratio:.2f}x ({self.ratio_low:.2f}-{self.ratio_high:.2f})"


def interleaved(candidate: Timed, reference: Timed, x_candidate: Any, x_reference: Any, rounds: int = ROUNDS,
                warmup: int = 3, block_ms: float = 40.0) -> Latency:
    """Time ``candidate`` and ``reference`` in ``rounds`` alternating blocks (at least ``block_ms``
    of runs each, so a sub-millisecond model is not judged on timer noise)."""
    first = max(candidate.time_runs(x_candidate, warmup, 2) + reference.time_runs(x_reference, warmup, 2))
    runs = max(1, min(100, int(block_ms / max(first, 1e-3))))
    ratios: list[float] = []
    times: list[float] = []
    for r in range(rounds):
        if r % 2 == 0:
            ref = reference.time_runs(x_reference, 0, runs)
            cand = candidate.time_runs(x_candidate, 0, runs)
        else:
            cand = candidate.time_runs(x_candidate, 0, runs)
            ref = reference.time_runs(x_reference, 0, runs)
        times += cand
        ratios.append(float(np.mean(cand)) / max(float(np.mean(ref)), 1e-9))
    floor, low, mid, high, ceiling = np.percentile(ratios, [10, 25, 50, 75, 90])
    return Latency(float(np.percentile(times, 50)), float(np.percentile(times, 95)), float(mid), float(low),
                   float(high), rounds, float(floor), float(ceiling))


def alone(model: Timed, x: Any, rounds: int = ROUNDS, warmup: int = 3, block_ms: float = 40.0) -> Latency:
    """The float reference itself: its own run times, ratio 1 by definition."""
    first = max(model.time_runs(x, warmup, 2))
    runs = max(1, min(100, int(block_ms / max(first, 1e-3))))
    times = [t for _ in range(rounds) for t in model.time_runs(x, 0, runs)]
    return Latency(float(np.percentile(times, 50)), float(np.percentile(times, 95)), 1.0, 1.0, 1.0, rounds, 1.0, 1.0)


def _arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)


@cache
def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host() -> str:
    """E.g. ``AMD EPYC (2 cores, x86_64)``: what every latency figure was measured on."""
    return f"{cpu_model()} ({os.cpu_count() or 1} cores, {_arch(platform.machine())})"


def proxy_note(target: TargetProfile) -> str | None:
    """Why this host's figure is only a proxy for the target's board, or None when it is the board's."""
    if target.runtime.name is Runtime.TENSORRT:
        return f"proxy: onnxruntime on this host, not TensorRT on {target.board.cpu}"
    if target.board.arch != _arch(platform.machine()) or target.board.accelerator:
        measured = "LiteRT" if target.runtime.name is Runtime.LITERT else "onnxruntime"
        return f"proxy: {measured} on this host, not the {target.board.cpu} board"
    return None


def title(target: TargetProfile, rounds: int) -> str:
    """The latency columns' caption: threads, host, how timed, and whether it is a proxy."""
    proxy = proxy_note(target)
    return (f"latency: {target.host_threads} thread(s) on {host()}, interleaved with float in {rounds} rounds"
            + (f"; {proxy}" if proxy else ""))
