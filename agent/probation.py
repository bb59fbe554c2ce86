"""How a new bundle is judged on this device while in PROBATION: the limits, and the verdict on one
telemetry window of live frames (``Deployer.probation`` acts on it: roll back, or keep judging until
the probation period is over)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbationLimits:
    """How a new bundle is judged on this device. Latency is judged against the bundle it replaces,
    timed on this same device (never against the build host's figure, which is information only)."""

    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5  # candidate / predecessor model latency (a deploy command may set its own)
    latency_slack_ms: float = 2.0  # plus this much live: a sub-millisecond model is otherwise judged on noise
    min_inferences: int = 20
    timing_rounds: int = 15  # paired rounds of the install-time timing


DEFAULT_LIMITS = ProbationLimits()


def failure(limits: ProbationLimits, latency_limit: float, inferences: int, errors: int, non_finite: int,
            p95_ms: float | None, baseline_p95_ms: float | None) -> str | None:
    """Why the bundle fails probation on this window, or None. ``latency_limit``: the ratio allowed over
    ``baseline_p95_ms``, the live model p95 of the bundle it replaced on this device (without one,
    latency was judged at install, by paired timing)."""
    if non_finite:
        return f"{non_finite} outputs were NaN or infinite"
    if inferences >= limits.min_inferences and errors / max(inferences, 1) > limits.max_error_rate:
        return f"error rate {errors / inferences:.1%} above {limits.max_error_rate:.0%}"
    if p95_ms is not None and baseline_p95_ms is not None and inferences >= limits.min_inferences:
        ceiling = baseline_p95_ms * latency_limit + limits.latency_slack_ms
        if p95_ms > ceiling:
            return (f"model latency p95 {p95_ms:.1f} ms on this device, above {ceiling:.1f} ms "
                    f"({latency_limit:g}x the {baseline_p95_ms:.1f} ms of the bundle it replaced, plus slack)")
    return None
