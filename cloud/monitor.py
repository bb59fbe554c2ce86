"""Monitoring: telemetry windows summed per device, group or bundle, with latency, error rate,
inventory, and prediction and input drift against the bundle's reference profile and against the
bundle that ran before it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.aggregate import Part, parts
from cloud.drift import add_histograms, histogram_psi, label_js
from cloud.fleet import previous_bundle
from cloud.store import Alert, BundleRow, Device, TelemetryRow, now
from contract.base import MAX_INT
from contract.common import Histogram
from contract.manifest import ReferenceProfile
from contract.telemetry import Telemetry

Scope = Literal["device", "group", "bundle"]


@dataclass
class Summary:
    windows: int = 0
    inferences: int = 0
    errors: int = 0
    frames_skipped: int = 0
    latency_p50: float | None = None  # inference-weighted mean of the windows' percentiles (per frame)
    latency_p95: float | None = None
    model_p95: float | None = None  # the runtime call alone, comparable with the manifest's latency
    predictions: Counter[str] = field(default_factory=Counter)
    inventory: dict[str, int] = field(default_factory=dict)  # the latest window's
    input_histograms: dict[str, Histogram] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)

    @property
    def error_rate(self) -> float:
        total = self.inferences + self.errors
        return self.errors / total if total else 0.0


def summarize(windows: Iterable[Telemetry]) -> Summary:
    s = Summary()
    weighted = [0.0, 0.0, 0]
    model = [0.0, 0]
    per_stat: dict[str, list[Histogram]] = defaultdict(list)
    latest: datetime | None = None
    for w in windows:
        s.windows += 1
        s.devices.add(w.device_id)
        s.inferences += w.inferences
        s.errors += sum(w.errors.values())
        s.frames_skipped += sum(w.frames_skipped.values())
        s.predictions.update(w.predictions)
        if w.latency_ms is not None and w.inferences:
            weighted[0] += w.latency_ms.p50 * w.inferences
            weighted[1] += w.latency_ms.p95 * w.inferences
            weighted[2] += w.inferences
        if w.model_latency_ms is not None and w.inferences:
            model[0] += w.model_latency_ms.p95 * w.inferences
            model[1] += w.inferences
        for name, h in w.input_stats.histograms.items():
            per_stat[name].append(h)
        if w.inventory and (latest is None or w.window_end > latest):
            latest, s.inventory = w.window_end, dict(w.inventory)
    if weighted[2]:
        s.latency_p50, s.latency_p95 = weighted[0] / weighted[2], weighted[1] / weighted[2]
    if model[1]:
        s.model_p95 = model[0] / model[1]
    for name, hs in per_stat.items():
        total = add_histograms(hs)
        if total is not None:
            s.input_histograms[name] = total
    return s


def summarize_parts(bucket: Iterable[Part]) -> Summary:
    """What ``summarize`` gives for the windows of ``bucket``, from their sums (``cloud.aggregate``);
    per input statistic, the histogram bins with the most mass."""
    s = Summary()
    latency, model = [0.0, 0.0, 0.0], [0.0, 0.0]
    histograms: dict[str, dict[str, list[int]]] = defaultdict(dict)  # stat -> edges (JSON) -> counts
    latest: datetime | None = None
    for part in bucket:
        s.windows += part.windows
        s.inferences += part.inferences
        s.errors += part.errors
        s.frames_skipped += part.frames_skipped
        s.predictions.update(part.predictions)
        s.devices.add(part.device_id)
        latency = [a + b for a, b in zip(latency, part.latency, strict=True)]
        model = [a + b for a, b in zip(model, part.model, strict=True)]
        for (stat, edges), bins in part.histograms.items():
            counts = histograms[stat].setdefault(edges, [0] * (len(json.loads(edges)) - 1))
            for index, value in bins.items():
                counts[index] += value
        if part.inventory_at is not None and (latest is None or part.inventory_at > latest):
            latest, s.inventory = part.inventory_at, dict(part.inventory)
    if latency[2]:
        s.latency_p50, s.latency_p95 = latency[0] / latency[2], latency[1] / latency[2]
    if model[1]:
        s.model_p95 = model[0] / model[1]
    for stat, by_edges in histograms.items():
        edges, counts = max(by_edges.items(), key=lambda kv: sum(kv[1]))
        s.input_histograms[stat] = Histogram(edges=json.loads(edges), counts=[min(c, MAX_INT) for c in counts])
    return s


def prediction_rates(s: Summary) -> dict[str, float]:
    return {k: v / s.inferences for k, v in s.predictions.items()} if s.inferences else {}


def prediction_drift(s: Summary, baseline: dict[str, float]) -> float | None:
    """Jensen-Shannon between the label rates seen and a baseline (reference or previous bundle)."""
    rates = prediction_rates(s)
    if not rates or not baseline:
        return None
    return label_js(baseline, rates)


def input_drift(s: Summary, reference: ReferenceProfile | None) -> dict[str, float]:
    """PSI per input statistic against the reference profile (statistics both sides have)."""
    if reference is None:
        return {}
    out = {}
    for name, observed in s.input_histograms.items():
        ref = reference.input_histograms.get(name)
        value = None if ref is None else histogram_psi(ref, observed)
        if value is not None:
            out[name] = value
    return out


def windows(rows: Sequence[TelemetryRow]) -> list[Telemetry]:
    return [Telemetry.model_validate(r.payload) for r in rows]


@dataclass(frozen=True)
class MonitorRow:
    scope: Scope
    subject: str
    summary: Summary
    reference_drift: float | None  # predictions vs the bundle's reference profile
    input_psi: float | None  # the worst input statistic
    bundles: tuple[str, ...]
    previous_drift: float | None = None  # bundle scope: predictions vs the model's previous bundle


def monitor(session: Session, scope: Scope, since: datetime | None = None) -> list[MonitorRow]:
    """One row per device, group or bundle over the telemetry received since ``since``, from sums
    the database computes (``cloud.aggregate``): no telemetry row is loaded."""
    devices = {d.id: d for d in session.scalars(select(Device)).all()} if scope == "group" else {}
    bundles = {b.sha256: b for b in session.scalars(select(BundleRow)).all()}
    buckets: dict[str, list[Part]] = defaultdict(list)
    for part in parts(session, since):
        if scope == "device":
            buckets[part.device_id].append(part)
        elif scope == "bundle":
            buckets[part.bundle_sha256 or "(none)"].append(part)
        else:
            device = devices.get(part.device_id)
            for group in (device.all_groups() if device else []) or ["(no group)"]:
                buckets[group].append(part)
    out = []
    summaries = {subject: summarize_parts(bucket) for subject, bucket in buckets.items()}
    for subject, bucket in sorted(buckets.items()):
        s = summaries[subject]
        shas = tuple(sorted({r.bundle_sha256 for r in bucket if r.bundle_sha256}))
        reference = _reference(bundles[shas[0]]) if len(shas) == 1 and shas[0] in bundles else None
        drift = prediction_drift(s, reference.prediction_rates) if reference else None
        psis = input_drift(s, reference)
        older = previous_bundle(session, bundles[subject]) if scope == "bundle" and subject in bundles else None
        before = None if older is None else older.sha256
        previous = prediction_drift(s, prediction_rates(summaries[before])) if before in summaries else None
        label = subject if scope != "bundle" or subject not in bundles else _bundle_label(bundles[subject])
        out.append(MonitorRow(scope, label, s, drift, max(psis.values()) if psis else None, shas, previous))
    return out


@dataclass(frozen=True)
class AlertLimits:
    max_prediction_drift: float = 0.15
    max_input_drift: float = 0.25
    max_error_rate: float = 0.05
    min_inferences: int = 100  # too little evidence raises nothing
    quiet_s: float = 600.0  # the same alert is not raised again this soon


def check_alerts(session: Session, since: datetime, limits: AlertLimits = AlertLimits()) -> list[str]:
    """Raise (store) alerts for bundles whose recent telemetry drifts or errs; returns the messages."""
    raised = []
    for row in monitor(session, "bundle", since):
        if row.summary.inferences < limits.min_inferences:
            continue
        checks = (("prediction_drift", row.reference_drift, limits.max_prediction_drift,
                   "prediction drift (JS) vs the reference profile"),
                  ("prediction_drift", row.previous_drift, limits.max_prediction_drift,
                   "prediction drift (JS) vs the previous bundle"),
                  ("input_drift", row.input_psi, limits.max_input_drift, "input drift (PSI) vs the reference profile"),
                  ("error_rate", row.summary.error_rate, limits.max_error_rate, "error rate"))
        for kind, value, limit, what in checks:
            if value is None or value <= limit:
                continue
            recent = session.scalar(select(Alert.id).where(
                Alert.kind == kind, Alert.subject == row.subject[:128],
                Alert.created_at >= datetime.now(since.tzinfo) - timedelta(seconds=limits.quiet_s)))
            if recent is None:
                message = f"{what} {value:.3f} above {limit:g} on {len(row.summary.devices)} devices"
                raise_alert(session, kind, "bundle", row.subject, message, value)
                raised.append(f"{row.subject}: {message}")
    return raised


def _reference(bundle: BundleRow) -> ReferenceProfile | None:
    reference = bundle.manifest.get("reference")
    return None if reference is None else ReferenceProfile.model_validate(reference)


def _bundle_label(bundle: BundleRow) -> str:
    return f"{bundle.model_name} v{bundle.model_version} #{bundle.sequence} ({bundle.sha256[:8]})"


def raise_alert(session: Session, kind: str, scope: str, subject: str, message: str,
                value: float | None = None) -> None:
    session.add(Alert(kind=kind, scope=scope, subject=subject[:128], message=message, value=value, created_at=now(),
                      dispatched=False))  # the webhooks pick it up (cloud.webhooks)
