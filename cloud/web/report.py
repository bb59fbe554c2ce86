"""A bundle's compile report, step by step, from its manifest: the float model, each pass the
compiler applied (its configuration, the nodes it kept in float) and the compiled result with
size, fidelity, accuracy and latency on the build host. The manifest measures the first and the
last step; when the compile was recorded in MLflow, the run's per-step metrics (logged with the
step's index, ``compiler.registry``) fill in the steps between."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MEASURES = ("size_bytes", "fidelity", "accuracy", "latency_p50_ms", "latency_p95_ms", "parameters", "flops")
HIDDEN_CONFIG = ("exclude_nodes", "calibration")  # shown apart, or an older bundle's build-host path


def _calibration(value: Any) -> str | None:
    """The calibration set a pass used, as its fingerprint says (``{"file", "sha256", "samples"}``); None for
    older bundles, whose manifests recorded the build host's path instead."""
    if isinstance(value, dict) and isinstance(value.get("sha256"), str):
        return f"{value.get('samples', '?')} samples, sha256 {value['sha256'][:12]}"
    return None


@dataclass
class Step:
    name: str
    kind: str  # source, pass, result
    config: dict[str, Any] = field(default_factory=dict)
    kept_in_float: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)  # MEASURES that are known


@dataclass
class Report:
    steps: list[Step]
    skipped: list[str]  # passes the target names that the compile did not apply (optional, never fitted)
    host: str | None
    budget: dict[str, Any]


def _latency(measure: dict[str, Any] | None) -> dict[str, float]:
    if not measure:
        return {}
    return {"latency_p50_ms": float(measure["p50_ms"]), "latency_p95_ms": float(measure["p95_ms"])}


def _pick(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k in MEASURES and isinstance(v, int | float)}


def compile_report(manifest: dict[str, Any], per_step: list[dict[str, float]] | None = None) -> Report:
    """``per_step``: MLflow's metrics by step index (0: the float model, i: the i-th pass)."""
    metrics = manifest.get("metrics") or {}
    source = Step("float model", "source", measured={
        **_pick(metrics.get("float_metrics") or {}), **_latency(metrics.get("float_latency")),
        "size_bytes": float(metrics.get("float_size_bytes", 0))})
    steps = [source]
    for record in manifest.get("passes") or []:
        config = dict(record.get("config") or {})
        kept = [str(n) for n in config.get("exclude_nodes") or []]
        shown = {k: v for k, v in config.items() if k not in HIDDEN_CONFIG}
        calibration = _calibration(config.get("calibration"))
        if calibration is not None:
            shown["calibration"] = calibration
        steps.append(Step(str(record.get("name")), "pass", config=shown, kept_in_float=kept))
    for index, measured in enumerate(per_step or []):
        if index < len(steps):
            steps[index].measured = {**_pick(measured), **steps[index].measured}
    steps.append(Step("compiled bundle", "result", measured={
        **_pick(metrics.get("compiled_metrics") or {}), **_latency(metrics.get("compiled_latency")),
        "size_bytes": float(metrics.get("compiled_size_bytes", 0))}))
    profile = (manifest.get("target") or {}).get("profile") or {}
    applied = {s.name for s in steps}
    skipped = [str(p.get("name")) for p in profile.get("passes") or [] if p.get("name") not in applied]
    latency = metrics.get("compiled_latency") or {}
    host = f"{latency['host']}, {latency['threads']} threads" if latency.get("host") else None
    return Report(steps, skipped, host, dict(profile.get("budget") or {}))
