"""How a new bundle is judged on this device while in PROBATION: the limits, the evidence gathered over
the whole probation (``Evidence``: counts and a bounded latency histogram, persisted with the job), and
the verdicts ``Deployer.probation`` acts on (roll back; keep judging; extend while too little live
evidence was seen; end at the maximum).

Each telemetry window is judged on its own when it has ``min_inferences`` (a sudden failure of a busy
device is not diluted by the minutes before it) *and* the accumulated evidence is judged once
``min_inferences`` attempts accumulated, so a device inferring a few times a window (an ``on_request``
fridge) is judged too. An attempt is an inference or an inference error: a bundle failing every
inference has attempts, not inferences (the cloud's error rate counts the same way)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProbationLimits:
    """How a new bundle is judged on this device. Latency is judged against the bundle it replaces,
    timed on this same device (never against the build host's figure, which is information only)."""

    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5  # candidate / predecessor model latency (a deploy command may set its own)
    latency_slack_ms: float = 2.0  # plus this much live: a sub-millisecond model is otherwise judged on noise
    min_inferences: int = 20  # live attempts needed before probation may end with SUCCEEDED
    # live latencies needed to judge a p95: of fewer it is about their maximum, and one stall of a busy device
    # rolls a healthy bundle back (seen: 3.6 ms against a 3.2 ms ceiling on a loaded 2-core host); below it,
    # latency stands judged by the install-time paired timing
    min_latency_samples: int = 100
    timing_rounds: int = 15  # paired rounds of the install-time timing
    max_s: float = 86_400.0  # probation extended for want of evidence ends this long after it started


DEFAULT_LIMITS = ProbationLimits()

# latency histogram: log-spaced bins from 10 µs to 100 s, 24 a decade (each ~10 % wide), each with its count
# and the lowest and highest value it holds: a p95 read from it (log-interpolated between those) is exact
# when its bin holds one value and within a bin's width otherwise, in at most 168 entries per job
LOW_MS, DECADES, PER_DECADE = 0.01, 7, 24
BINS = DECADES * PER_DECADE


def _bin(value_ms: float) -> int:
    if not value_ms > LOW_MS:  # also NaN
        return 0
    return min(BINS - 1, int(math.log10(value_ms / LOW_MS) * PER_DECADE))


@dataclass
class Evidence:
    """What the bundle did over its probation so far. Bounded whatever the probation's length."""

    inferences: int = 0  # successful inferences
    errors: int = 0  # inferences that failed
    non_finite: int = 0
    latency: dict[int, list[float]] = field(default_factory=dict)  # bin -> [count, lowest, highest] (model ms)

    @property
    def attempts(self) -> int:
        return self.inferences + self.errors

    def add(self, inferences: int, errors: int, non_finite: int, latencies_ms: Iterable[float] | None,
            p95_ms: float | None = None) -> None:
        """One window's counts and latencies (none given: its ``p95_ms`` stands for each inference)."""
        self.inferences += inferences
        self.errors += errors
        self.non_finite += non_finite
        if latencies_ms is None and p95_ms is not None and inferences:
            self.timed(p95_ms, inferences)
        for value in latencies_ms or ():
            self.timed(value)

    def timed(self, value_ms: float, count: int = 1) -> None:
        if not math.isfinite(value_ms):
            return
        entry = self.latency.setdefault(_bin(value_ms), [0, value_ms, value_ms])
        entry[0] += count
        entry[1], entry[2] = min(entry[1], value_ms), max(entry[2], value_ms)

    def p95(self) -> float | None:
        """The 95th percentile of the latencies seen, log-interpolated within its bin."""
        total = sum(e[0] for e in self.latency.values())
        if not total:
            return None
        rank, seen = 0.95 * total, 0.0
        for b in sorted(self.latency):
            count, low, high = self.latency[b]
            if seen + count >= rank:
                fraction = (rank - seen) / count
                return float(low * (high / low) ** fraction) if low > 0 else float(low + (high - low) * fraction)
            seen += count
        return float(self.latency[max(self.latency)][2])

    def to_json(self) -> dict[str, Any]:
        return {"inferences": self.inferences, "errors": self.errors, "non_finite": self.non_finite,
                "latency": {str(k): v for k, v in sorted(self.latency.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Evidence:
        """What a job file holds; one that does not parse (written by hand, damaged) starts afresh."""
        try:
            latency = {int(k): [float(x) for x in v] for k, v in dict((data or {}).get("latency") or {}).items()
                       if 0 <= int(k) < BINS and len(v) == 3}
            return cls(int((data or {}).get("inferences", 0)), int((data or {}).get("errors", 0)),
                       int((data or {}).get("non_finite", 0)), latency)
        except (TypeError, ValueError, AttributeError):
            return cls()


class Baselines:
    """The live model p95 each of the 8 most recent bundles had on this device: the next bundle's probation
    is judged against it. Taken from one window when it has ``min_inferences`` (exact), else from the
    windows since the last figure, accumulated until they have (a device inferring a few times a window)."""

    def __init__(self, min_inferences: int, keep: int = 8) -> None:
        self.min_inferences, self.keep = min_inferences, keep
        self.p95: dict[str, float] = {}
        self._gathering: tuple[str, Evidence] | None = None  # (bundle sha, its latencies since its last figure)

    def window(self, sha256: str, latencies_ms: Sequence[float], window_p95: float | None) -> None:
        if self._gathering is None or self._gathering[0] != sha256:
            self._gathering = (sha256, Evidence())
        evidence = self._gathering[1]
        if len(latencies_ms) >= self.min_inferences and window_p95 is not None:
            figure: float | None = window_p95
        else:
            evidence.add(len(latencies_ms), 0, 0, latencies_ms)
            figure = evidence.p95() if evidence.inferences >= self.min_inferences else None
        if figure is None:
            return
        self._gathering = None
        self.p95.pop(sha256, None)
        self.p95[sha256] = figure
        for old in list(self.p95)[:-self.keep]:
            del self.p95[old]

    def get(self, sha256: str | None) -> float | None:
        return self.p95.get(sha256 or "")


def failure(limits: ProbationLimits, latency_limit: float, inferences: int, errors: int, non_finite: int,
            p95_ms: float | None, baseline_p95_ms: float | None) -> str | None:
    """Why the bundle fails probation on this evidence (one window, or the whole probation), or None.
    ``latency_limit``: the ratio allowed over ``baseline_p95_ms``, the live model p95 of the bundle it
    replaced on this device (without one, latency was judged at install, by paired timing)."""
    attempts = inferences + errors
    if non_finite:
        return f"{non_finite} outputs were NaN or infinite"
    if attempts >= limits.min_inferences and errors / attempts > limits.max_error_rate:
        return (f"error rate {errors / attempts:.1%} above {limits.max_error_rate:.0%} "
                f"({errors} of {attempts} inferences)")
    if p95_ms is not None and baseline_p95_ms is not None and inferences >= max(limits.min_inferences,
                                                                                limits.min_latency_samples):
        ceiling = baseline_p95_ms * latency_limit + limits.latency_slack_ms
        if p95_ms > ceiling:
            return (f"model latency p95 {p95_ms:.1f} ms on this device, above {ceiling:.1f} ms "
                    f"({latency_limit:g}x the {baseline_p95_ms:.1f} ms of the bundle it replaced, plus slack)")
    return None


@dataclass(frozen=True)
class Verdict:
    """What probation does after a window: ``judging`` (inside ``probation_s``), ``waiting`` (extended
    for want of evidence; ``until``: when it ends), ``passed`` / ``rolled_back`` (with the reason)."""

    outcome: str
    reason: str | None = None
    until: float | None = None


def judge(limits: ProbationLimits, latency_limit: float, evidence: Evidence, window: tuple[int, int, int],
          p95_ms: float | None, baseline_p95_ms: float | None, elapsed_s: float, probation_s: float,
          started: float) -> Verdict:
    """The verdict after one window (``window``: its inferences, errors, non-finite outputs, already
    added to ``evidence``): the window alone, then the whole probation, then its time."""
    reason = (failure(limits, latency_limit, *window, p95_ms, baseline_p95_ms)
              or failure(limits, latency_limit, evidence.inferences, evidence.errors, evidence.non_finite,
                         evidence.p95(), baseline_p95_ms))
    if reason is not None:
        return Verdict("rolled_back", f"probation failed: {reason}")
    if elapsed_s < probation_s:
        return Verdict("judging")
    if evidence.attempts >= limits.min_inferences:
        return Verdict("passed")
    longest = max(limits.max_s, probation_s)
    if elapsed_s < longest:
        return Verdict("waiting", until=started + longest)
    keep, why = at_maximum(limits, evidence, elapsed_s)
    return Verdict("passed" if keep else "rolled_back", why)


def at_maximum(limits: ProbationLimits, evidence: Evidence, waited_s: float) -> tuple[bool, str]:
    """The decision when probation reached ``max_s`` with fewer than ``min_inferences`` attempts:
    (keep, reason). Kept (SUCCEEDED, known-good) on its self-test and install timing when no live
    inference failed; rolled back when any did (too few to compute a rate, but the only evidence there is)."""
    seen = f"only {evidence.attempts} live inferences in {_duration(waited_s)} ({limits.min_inferences} needed)"
    if evidence.errors:
        return False, f"probation ended: {seen}, {evidence.errors} failed"
    return True, f"probation ended: {seen}, none failed: kept on its self-test and install timing"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"
