"""Health gates of a rollout wave: plain functions from what the wave did to pass or fail, with
the measured value, the limit and a sentence an operator can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cloud.monitor import Summary, input_drift, prediction_drift
from cloud.plan import Gates
from contract.jobs import JobState
from contract.manifest import Manifest


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class WaveEvidence:
    """What a wave did: its jobs' final states, telemetry on the new bundle, a prediction baseline."""

    job_states: Sequence[str]
    summary: Summary
    baseline: dict[str, float]  # label rates of the previous bundle (or the reference profile)
    baseline_source: str
    shadow_agreements: Sequence[float] = ()
    baseline_model_p95: float | None = None  # the previous bundle's model p95 on the same devices


def evaluate(gates: Gates, evidence: WaveEvidence, manifest: Manifest) -> list[GateResult]:
    results = [_success(gates, evidence)]
    s = evidence.summary
    data_gates = (gates.max_error_rate, gates.max_latency_ratio, gates.max_prediction_drift, gates.max_input_drift)
    if any(g is not None for g in data_gates) and s.inferences < gates.min_inferences:
        why = ("no job succeeded, so nothing ran the new bundle" if JobState.SUCCEEDED.value not in
               evidence.job_states else "are the devices' cameras running?")
        results.append(GateResult("evidence", False, s.inferences, gates.min_inferences,
                                  f"only {s.inferences} inferences on the new bundle, {gates.min_inferences} needed "
                                  f"to judge it ({why})"))
        return results
    if gates.max_error_rate is not None:
        results.append(GateResult("error_rate", s.error_rate <= gates.max_error_rate, s.error_rate,
                                  gates.max_error_rate, f"{s.errors} errors in {s.inferences + s.errors} inferences"))
    if gates.max_latency_ratio is not None:
        results.append(_latency(gates.max_latency_ratio, s, evidence.baseline_model_p95, manifest))
    if gates.max_prediction_drift is not None:
        drift = prediction_drift(s, evidence.baseline)
        results.append(GateResult(
            "prediction_drift", drift is None or drift <= gates.max_prediction_drift, drift,
            gates.max_prediction_drift,
            f"Jensen-Shannon of label rates vs {evidence.baseline_source}" if drift is not None
            else "no baseline to compare predictions with"))
    if gates.max_input_drift is not None:
        psis = input_drift(s, manifest.reference)
        worst = max(psis.items(), key=lambda kv: kv[1]) if psis else None
        results.append(GateResult(
            "input_drift", worst is None or worst[1] <= gates.max_input_drift, None if worst is None else worst[1],
            gates.max_input_drift,
            f"PSI of {worst[0]} vs the reference profile" if worst else "no input statistics to compare"))
    if gates.min_shadow_agreement is not None:
        agreements = list(evidence.shadow_agreements)
        mean = sum(agreements) / len(agreements) if agreements else None
        results.append(GateResult("shadow_agreement", mean is not None and mean >= gates.min_shadow_agreement, mean,
                                  gates.min_shadow_agreement, f"{len(agreements)} shadow reports"))
    return results


def _success(gates: Gates, evidence: WaveEvidence) -> GateResult:
    states = list(evidence.job_states)
    succeeded = sum(1 for s in states if s == JobState.SUCCEEDED.value)
    ratio = succeeded / len(states) if states else 0.0
    failed = [s for s in states if s != JobState.SUCCEEDED.value]
    detail = f"{succeeded}/{len(states)} jobs succeeded"
    if failed:
        detail += " (" + ", ".join(f"{failed.count(s)} {s}" for s in sorted(set(failed))) + ")"
    return GateResult("job_success", ratio >= gates.min_success_ratio, ratio, gates.min_success_ratio, detail)


def _latency(limit: float, s: Summary, baseline: float | None, manifest: Manifest) -> GateResult:
    """The new bundle's model p95 against the previous bundle's on the same devices: a board 5x
    slower than the build host is 5x slower for both. The manifest's build-host figure is shown
    for information, never judged against."""
    built = manifest.metrics.compiled_latency
    host = f"; {built.p95_ms:.2f} ms on the build host (information only)" if built is not None else ""
    if s.model_p95 is None or baseline is None or baseline <= 0:
        return GateResult("latency_p95", True, None, limit,
                          f"no previous bundle's latency on these devices to compare with (skipped){host}")
    ratio = s.model_p95 / baseline
    return GateResult("latency_p95", ratio <= limit, ratio, limit,
                      f"model p95 {s.model_p95:.2f} ms vs {baseline:.2f} ms of the previous bundle on the same "
                      f"devices{host}")


def failed(results: Sequence[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]
