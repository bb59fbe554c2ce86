"""Rollout plans, drift measures and gates: plain functions, no store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud.drift import histogram_psi, js, label_js, psi
from cloud.gates import WaveEvidence, evaluate, failed
from cloud.monitor import Summary, summarize
from cloud.plan import Gates, RolloutPlan, parse_waves
from contract.common import Histogram
from contract.manifest import Manifest


def test_waves_short_form_and_cumulative_sizes() -> None:
    plan = RolloutPlan(waves="1,10%,50%,100%")  # type: ignore[arg-type]
    assert [w.label() for w in plan.waves] == ["1", "10%", "50%", "100%"]
    assert plan.sizes(200) == [1, 20, 100, 200]
    assert plan.sizes(4) == [1, 2, 4]  # 10% of 4 rounds up to 1 (no new device): that wave is dropped
    assert plan.sizes(1) == [1]


@pytest.mark.parametrize("text, message", [("1,x%", "neither a device count"), ("50%,10%", "must grow"),
                                           ("0", "greater than or equal to 1"), ("150%", "less than or equal")])
def test_bad_waves_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        RolloutPlan(waves=text)  # type: ignore[arg-type]


def test_gates_reject_out_of_range_values() -> None:
    with pytest.raises(ValidationError, match="min_success_ratio"):
        Gates(min_success_ratio=1.5)
    with pytest.raises(ValidationError, match="extra"):
        Gates(max_errors=3)  # type: ignore[call-arg]
    assert parse_waves(" 2 , 100% ")[0].count == 2


def test_psi_and_js_behave() -> None:
    same = [10, 20, 30, 40]
    assert psi(same, same) == pytest.approx(0, abs=1e-9)
    assert psi(same, [40, 30, 20, 10]) > 0.5
    assert js([1, 0], [0, 1]) == pytest.approx(1, abs=1e-2)  # smoothing keeps it just below 1
    assert js(same, same) == pytest.approx(0, abs=1e-9)
    assert label_js({"milk": 1}, {"milk": 0.3, "apple": 0.3, "can": 0.4}) > 0.4
    with pytest.raises(ValueError, match="no mass"):
        js([0, 0], [1, 1])


def test_histogram_psi_needs_samples_and_uses_quantile_bins() -> None:
    edges = [float(x) for x in range(0, 17)]
    ref = Histogram(edges=edges, counts=[0, 0, 10, 30, 40, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    near = Histogram(edges=edges, counts=[0, 0, 11, 29, 41, 19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    far = Histogram(edges=edges, counts=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 40, 30, 10, 0, 0])
    few = Histogram(edges=edges, counts=[0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert (histogram_psi(ref, near) or 1) < 0.05
    assert (histogram_psi(ref, far) or 0) > 1
    assert histogram_psi(ref, few) is None  # too few samples to judge
    assert histogram_psi(ref, Histogram(edges=[0.0, 1.0], counts=[100])) is None  # other bins


def _evidence(states: list[str], inferences: int, errors: int, predictions: dict[str, int],
              baseline: dict[str, float]) -> WaveEvidence:
    s = Summary(inferences=inferences, errors=errors)
    s.predictions.update(predictions)
    return WaveEvidence(states, s, baseline, "the previous bundle")


def test_gates_pass_healthy_and_name_what_failed(world: dict[str, object]) -> None:
    manifest: Manifest = world["bundles"][5].manifest  # type: ignore[index]
    gates = Gates(max_latency_ratio=None, max_input_drift=None, min_inferences=10)
    baseline = {"apple": 0.5, "milk_carton": 0.3, "can": 0.2}
    healthy = _evidence(["SUCCEEDED"] * 3, 100, 0, {"apple": 48, "milk_carton": 31, "can": 21}, baseline)
    assert not failed(evaluate(gates, healthy, manifest))
    broken = _evidence(["SUCCEEDED", "ROLLED_BACK", "SUCCEEDED"], 100, 9, {"milk_carton": 100}, baseline)
    bad = {r.gate: r for r in failed(evaluate(gates, broken, manifest))}
    assert set(bad) == {"job_success", "error_rate", "prediction_drift"}
    assert "1 ROLLED_BACK" in bad["job_success"].detail
    shadowed = WaveEvidence(["SUCCEEDED"], healthy.summary, baseline, "the previous bundle", [0.31, 0.35])
    verdict = {r.gate: r for r in evaluate(Gates(max_latency_ratio=None, min_shadow_agreement=0.9,
                                                 min_inferences=10), shadowed, manifest)}
    assert not verdict["shadow_agreement"].passed and verdict["shadow_agreement"].value == pytest.approx(0.33)
    idle = _evidence(["SUCCEEDED"], 3, 0, {}, baseline)
    assert [r.gate for r in failed(evaluate(gates, idle, manifest))] == ["evidence"]


def test_summarize_weights_latency_by_inferences() -> None:
    from datetime import UTC, datetime

    from contract.common import LatencyStats
    from contract.telemetry import Telemetry

    t = datetime(2026, 1, 1, tzinfo=UTC)
    a = Telemetry(device_id="a", seq=1, window_start=t, window_end=t, inferences=30, predictions={"x": 3},
                  latency_ms=LatencyStats(p50=1, p95=2, p99=2, mean=1, max=2), inventory={"x": 1})
    b = Telemetry(device_id="b", seq=1, window_start=t, window_end=t, inferences=10, errors={"E": 2},
                  latency_ms=LatencyStats(p50=5, p95=10, p99=10, mean=5, max=10))
    s = summarize([a, b])
    assert s.inferences == 40 and s.errors == 2 and s.devices == {"a", "b"}
    assert s.latency_p95 == pytest.approx((2 * 30 + 10 * 10) / 40)
    assert s.error_rate == pytest.approx(2 / 42) and s.inventory == {"x": 1}


@pytest.mark.parametrize("k", [1, 5, 20])
def test_latency_gate_compares_with_the_previous_bundle_on_the_same_devices(world: dict[str, object],
                                                                           k: float) -> None:
    """Boards k times slower than the build host: the manifest's figure would fail every healthy
    bundle at k = 5 and 20; against the previous bundle on the same devices only a really slower one fails."""
    manifest: Manifest = world["bundles"][5].manifest  # type: ignore[index]
    gates = Gates(max_input_drift=None, max_prediction_drift=None, min_inferences=10)
    built = manifest.metrics.compiled_latency.p95_ms  # type: ignore[union-attr]

    def wave(model_p95: float, previous_p95: float | None) -> dict[str, object]:
        s = Summary(inferences=100, errors=0, model_p95=model_p95)
        evidence = WaveEvidence(["SUCCEEDED"], s, {}, "the previous bundle", baseline_model_p95=previous_p95)
        return {r.gate: r for r in evaluate(gates, evidence, manifest)}

    healthy = wave(built * k * 1.1, built * k)
    assert healthy["latency_p95"].passed and healthy["latency_p95"].value == pytest.approx(1.1)
    assert "information only" in healthy["latency_p95"].detail
    slower = wave(built * k * 2.0, built * k)
    assert not slower["latency_p95"].passed and slower["latency_p95"].value == pytest.approx(2.0)
    first = wave(built * k * 3.0, None)  # nothing ran here before: nothing to judge against
    assert first["latency_p95"].passed and "skipped" in first["latency_p95"].detail
