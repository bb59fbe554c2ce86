"""The search that widens when a quantization pass misses the budget, and its front.

Full int8 over budget is not the end of a compile. In order:

1. **Nodes kept in float** (passes with ``exclude_nodes``, up to the spec's ``max_float_nodes``):
   candidate sets are the most sensitive nodes (per-node sensitivity, ``compiler.sensitivity``)
   and the input stem (the first nodes in graph order, where early high-resolution activations
   often carry the loss). Every set is built (calibration ranges are cached, so a build is
   cheap) and *screened*: its outputs on a few calibration frames against the float model's.
   The screening error predicts fidelity through the one measured point (full int8), refitted
   after every evaluation; only the smallest candidate predicted within budget is evaluated,
   at most ``FAMILY_EVALUATIONS`` times.
2. **The spec's alternatives** (``PassSpec.alternatives``: int8 weights with float activations,
   fp16 weights, float with graph optimisation, another LiteRT variant, ...), smallest first.
   Each is built and timed (cheap); it is evaluated only if it could beat the best candidate
   within budget on size x latency, and only if it is not slower than float (a slower one is
   evaluated last, only if nothing else meets the budget).

The chosen candidate is within budget and, if any is, not slower than float; among those,
latency decides only where the host's noise cannot have: each candidate's (size / float size) x
(latency / float latency) is an interval (the interleaved rounds' ratios from the 10th to the
90th percentile, ``Latency.decisive``), and a candidate whose interval lies wholly above another's
is out. What remains is a tie, broken by size, then by the order the candidates were built in: the
same model, data and target ship the same variant on a quiet or a busy host (``choose``; the
reason is recorded). What it gave up is said in its
step's note and recorded in the manifest (the step's pass record, key ``search``). Every
candidate tried is a row of the front, with its status. A budget is never relaxed: if nothing
meets it, BudgetError carries the front. ``EvaluationCapReached`` stops the search; the best
candidate found so far is shipped if it meets the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler import onnxio
from compiler.errors import BudgetError, EvaluationCapReached
from compiler.evalcache import Evaluation, file_sha256
from compiler.graph import stats
from compiler.latency import Latency
from compiler.passes import get_pass
from compiler.pipeline import Pipeline, Step
from compiler.precision import describe
from compiler.sensitivity import Screen, node_sensitivity
from compiler.target import PassSpec

SLOWER = 1.05  # a latency ratio whose decisive range (Latency.decisive) is wholly above this is slower than float
FAMILY_EVALUATIONS = 3  # evaluations the float-node family may spend
# a prediction this many evaluation images' worth below the budget is within the screening's noise:
# when nothing is predicted within budget, the best such candidate is still evaluated
NEAR_IMAGES = 2
SCREEN_FRAMES = 16
TOP_K = (1, 4, 16)
STEM_K = (4, 8, 16, 32)
MAX_RECORDED = 32  # candidates recorded in the manifest


@dataclass
class Candidate:
    label: str
    model: Path | None
    size_bytes: int
    precision: str
    pass_name: str
    config: dict[str, Any] = field(default_factory=dict)
    step: Step | None = None  # measured (evaluated, or checked exact)
    latency: Latency | None = None
    screen_error: float | None = None
    predicted: float | None = None  # fidelity predicted from the screening error
    status: str = ""
    gives_up: str = ""
    kept: list[tuple[str, float]] = field(default_factory=list)  # nodes kept in float, with their error

    @property
    def within_budget(self) -> bool:
        return self.step is not None and self.step.within_budget

    def score(self, float_size: int) -> tuple[float, float]:
        """(size / float size) x (latency / float latency) over the decisive range of the rounds' ratios."""
        size = self.size_bytes / max(1, float_size)
        if self.latency is None:
            return size, size
        floor, ceiling = self.latency.decisive
        return size * floor, size * ceiling


@dataclass
class SearchRecord:
    pass_name: str
    float_size: int
    budget: float
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    reason: str = ""  # why the chosen candidate won over the others within budget
    gave_up: str = ""
    stopped: str = ""  # why the search stopped early (the evaluation cap)

    def manifest(self) -> dict[str, Any]:
        """The search as the manifest records it (the chosen step's pass record, key ``search``)."""
        rows = [{"candidate": c.label, "precision": c.precision, "size_bytes": c.size_bytes,
                 "fidelity": None if c.step is None else round(c.step.fidelity, 6),
                 "latency_vs_float": None if c.latency is None else round(c.latency.ratio, 4),
                 "status": c.status} for c in self.candidates[:MAX_RECORDED]]
        return {"pass": self.pass_name, "chosen": self.chosen.label if self.chosen else None,
                "reason": self.reason, "gave_up": self.gave_up, "budget": self.budget, "candidates": rows}


def slower(latency: Latency | None) -> bool:
    """Slower than float beyond the host's noise: the whole decisive range above ``SLOWER``."""
    return latency is not None and latency.decisive[0] > SLOWER


def beats(a: Candidate, b: Candidate, float_size: int) -> bool:
    """``a`` is better than ``b`` on size x latency whatever the noise: their intervals do not overlap."""
    return a.score(float_size)[1] < b.score(float_size)[0]


def can_widen(spec: PassSpec) -> bool:
    keeps_float = "exclude_nodes" in get_pass(spec.name).Config.model_fields and spec.max_float_nodes > 0
    return keeps_float or bool(spec.alternatives)


def choose(record: SearchRecord) -> Candidate | None:
    """The candidate to ship, decided the same way whatever the host's load (and why, in
    ``record.reason``): within budget; not slower than float if any is; not beaten on size x latency
    beyond the noise by another (``beats``); then the smallest; then the first built."""
    choice, record.reason = _choose(record.candidates, record.float_size)
    return choice


def _choose(candidates: list[Candidate], float_size: int) -> tuple[Candidate | None, str]:
    within = [c for c in candidates if c.within_budget]
    if not within:
        return None, "nothing within budget"
    fast = [c for c in within if not slower(c.latency)]
    pool = fast or within
    beaten = {id(c): next(d for d in pool if beats(d, c, float_size)) for c in pool
              if any(beats(d, c, float_size) for d in pool)}
    front = [c for c in pool if id(c) not in beaten]  # never empty: the lowest interval is beaten by none
    order = {id(c): i for i, c in enumerate(candidates)}
    chosen = min(front, key=lambda c: (c.size_bytes, order[id(c)]))
    parts = [f"{len(within)} within budget"]
    if len(fast) < len(within):
        parts.append(f"{len(within) - len(fast)} slower than float on this host" if fast else
                     "all slower than float on this host")
    if beaten:
        parts.append("faster beyond the noise (size x latency, 10th-90th percentiles of the rounds apart): "
                     + ", ".join(f"'{beaten[id(c)].label}' over '{c.label}'" for c in pool if id(c) in beaten))
    ties = [c for c in front if c is not chosen]
    if ties:
        parts.append("a tie on size x latency (10th-90th percentiles of the rounds overlap) with "
                     + ", ".join(f"'{c.label}'" for c in ties) + ": the smallest, then the first built, wins")
    return chosen, "; ".join(parts)


def widen(pipeline: Pipeline, spec: PassSpec, current: Step, failed: Step, reference: Evaluation,
          float_accuracy: float | None, tag: str) -> Step:
    failed.kept = False  # a row of the table; the front says what became of it
    record = SearchRecord(spec.name, pipeline.steps[0].stats.size_bytes, pipeline.min_fidelity)
    record.candidates.append(Candidate(f"{spec.name} as configured", failed.model, failed.stats.size_bytes,
                                       failed.precision, spec.name, failed.config, failed, failed.latency,
                                       status="over budget"))
    pipeline.searches.append(record)
    try:
        if "exclude_nodes" in get_pass(spec.name).Config.model_fields and spec.max_float_nodes > 0:
            _keep_in_float(pipeline, spec, current, record, reference, float_accuracy, tag)
        _alternatives(pipeline, spec, current, record, reference, float_accuracy, tag)
    except EvaluationCapReached as exc:
        record.stopped = str(exc)
    for c in record.candidates:
        if not c.status:
            c.status = "not evaluated: " + (record.stopped or "search ended")
    chosen = choose(record)
    if chosen is None or chosen.step is None:
        measured = [c.step for c in record.candidates if c.step is not None]
        best = max(measured, key=lambda s: s.fidelity)
        why = f" ({record.stopped})" if record.stopped else ""
        raise BudgetError(f"nothing the search tried for {spec.name} meets the budget: {len(record.candidates)} "
                          f"candidates, {len(measured)} measured{why}; " + pipeline.over_budget(best)
                          + "; the budget is not relaxed: change it explicitly (--min-fidelity) or the target's "
                            "passes", best=best, front=record)
    return _mark(pipeline, record, chosen, failed)


def _mark(pipeline: Pipeline, record: SearchRecord, chosen: Candidate, failed: Step) -> Step:
    step = chosen.step
    assert step is not None
    record.chosen = chosen
    chosen.status = "chosen"
    lost = f"{record.pass_name} as configured: fidelity {failed.fidelity:.4f} < {record.budget:.4f}"
    parts = [f"{len(chosen.kept)} node(s) kept in float" if chosen.kept else chosen.gives_up, lost]
    if chosen.latency is not None and slower(chosen.latency):
        parts.append(f"slower than float on this host ({chosen.latency.text})")
    record.gave_up = "; ".join(p for p in parts if p)
    if chosen.kept:
        pipeline.kept_in_float[:] = chosen.kept
    measured = sum(c.step is not None for c in record.candidates)
    step.note = (f"search chose '{chosen.label}' of {len(record.candidates)} candidates ({measured} measured; "
                 f"{record.reason}); gave up: {record.gave_up}"
                 + ("" if not chosen.kept else ": " + ", ".join(f"{n} (error {e:.4f})" for n, e in chosen.kept)))
    step.config = {**step.config, "search": record.manifest()}
    return step


def _candidate(pipeline: Pipeline, label: str, model: Path, pass_name: str, config: dict[str, Any],
               **extra: Any) -> Candidate:
    return Candidate(label, model, stats(model).size_bytes, describe(model).label, pass_name, config, **extra)


def _keep_in_float(pipeline: Pipeline, spec: PassSpec, current: Step, record: SearchRecord, reference: Evaluation,
                   float_accuracy: float | None, tag: str) -> None:
    full = record.candidates[0]
    assert full.model is not None
    pipeline.report(f"{spec.name} over budget: ranking nodes by quantization sensitivity")
    ranking = [r for r in node_sensitivity(current.model, full.model, pipeline.calibration_file()) if r[1] > 0]
    pipeline.counts.sensitivity += 1
    error = dict(ranking)
    order = [n.name for n in onnxio.load(current.model).graph.node if n.name]
    cap = spec.max_float_nodes
    sets = [(f"the {k} most sensitive node(s) in float", ranking[:k]) for k in TOP_K if k <= min(len(ranking), cap)]
    sets += [(f"the first {k} nodes in float (input stem)", [(n, error.get(n, 0.0)) for n in order[:k]])
             for k in STEM_K if k < len(order) and k <= cap]
    excluded = list(spec.config.get("exclude_nodes", []))
    frames = pipeline.frames(SCREEN_FRAMES)
    with pipeline.open(current.model) as float_model:
        screen = Screen(float_model, frames)

    def screened(model: Path) -> float:
        pipeline.counts.screenings += 1
        pipeline.counts.screened_frames += len(frames)
        with pipeline.open(model) as loaded:
            return screen.error(loaded)

    full.screen_error = screened(full.model)
    seen = {file_sha256(full.model): full}
    pool: list[Candidate] = []
    for index, (label, kept) in enumerate(sets):
        pipeline.report(f"{spec.name} over budget: building and screening {label}")
        out, config = pipeline.apply_pass(spec, current.model, {"exclude_nodes": excluded + [n for n, _ in kept]},
                                          f"{tag}-float{index}")
        digest = file_sha256(out)
        if digest in seen:
            record.candidates.append(Candidate(label, None, seen[digest].size_bytes, seen[digest].precision,
                                               spec.name, status=f"same model as '{seen[digest].label}'"))
            continue
        candidate = _candidate(pipeline, label, out, spec.name, config, kept=kept, screen_error=screened(out))
        seen[digest] = candidate
        pool.append(candidate)
        record.candidates.append(candidate)
    points = [(full.screen_error, full.step.fidelity if full.step else 0.0)]
    for _ in range(FAMILY_EVALUATIONS):
        weight = sum(e * e for e, _ in points)
        slope = sum(e * (1.0 - f) for e, f in points) / weight if weight > 0 else float("inf")
        for c in pool:
            c.predicted = max(0.0, 1.0 - slope * (c.screen_error or 0.0))
        pick = next_pick(pool, record.budget, NEAR_IMAGES / max(1, len(reference.predictions)))
        if pick is None or pick.model is None:
            break
        pipeline.report(f"{spec.name} over budget: evaluating {pick.label} (predicted fidelity {pick.predicted:.3f})")
        pick.step = pipeline.measure(spec.name, pick.model, pick.config, reference, float_accuracy)[0]
        pick.latency = pick.step.latency
        points.append((pick.screen_error or 0.0, pick.step.fidelity))
        pick.status = "within budget" if pick.step.within_budget else "over budget"
        if pick.step.within_budget:
            break
    for c in pool:
        if c.step is None:
            c.status = f"screened only: predicted fidelity {c.predicted:.3f}"


def next_pick(pool: list[Candidate], budget: float, near: float) -> Candidate | None:
    """The next float-node candidate to evaluate: the smallest predicted within budget; if none is,
    the smallest predicted within ``near`` of it (a screening on a few frames cannot tell 0.98 from
    0.99: on 103 photos one photo is 0.0097 of fidelity); None when no candidate is worth an evaluation."""
    waiting = [c for c in pool if c.step is None and c.predicted is not None]
    hopeful = [c for c in waiting if (c.predicted or 0.0) >= budget] or \
        [c for c in waiting if (c.predicted or 0.0) >= budget - near]
    return min(hopeful, key=lambda c: (c.size_bytes, c.screen_error or 0.0)) if hopeful else None


def _alternatives(pipeline: Pipeline, spec: PassSpec, current: Step, record: SearchRecord, reference: Evaluation,
                  float_accuracy: float | None, tag: str) -> None:
    built: list[Candidate] = []
    for index, given in enumerate(spec.alternatives):
        label = given.name + "".join(f" {k}={v}" for k, v in given.config.items())
        # another configuration of the spec's own pass inherits the spec's config
        alternative = given.model_copy(update={"config": {**spec.config, **given.config}}) \
            if given.name == spec.name else given
        pipeline.report(f"{record.pass_name} over budget: building {label}")
        out, config = pipeline.apply_pass(alternative, current.model, {}, f"{tag}-alt{index}-{alternative.name}")
        if out == current.model:
            record.candidates.append(Candidate(label, None, current.stats.size_bytes, current.precision,
                                               alternative.name, status="the pass changed nothing"))
            continue
        candidate = _candidate(pipeline, label, out, alternative.name, config, gives_up=alternative.gives_up)
        record.candidates.append(candidate)
        built.append(candidate)
    deferred: list[Candidate] = []
    for candidate in sorted(built, key=lambda c: c.size_bytes):
        assert candidate.model is not None
        candidate.latency = pipeline.time(candidate.model)
        best = choose(record)
        fast = not slower(candidate.latency)
        best_fast = best is not None and not slower(best.latency)
        if best is not None and (best_fast or not fast) and not _could_win(candidate, best, record):
            candidate.status = f"not evaluated: size x latency no better than '{best.label}'"
        elif not fast:
            candidate.status = f"not evaluated: slower than float on this host ({candidate.latency.text})"
            if best is None:
                deferred.append(candidate)
        else:
            _evaluate(pipeline, candidate, current, reference, float_accuracy)
    for candidate in deferred:  # slower than float: only when nothing else meets the budget
        if choose(record) is not None:
            break
        _evaluate(pipeline, candidate, current, reference, float_accuracy)


def _could_win(candidate: Candidate, best: Candidate, record: SearchRecord) -> bool:
    """Whether ``candidate``, within budget, could be chosen over ``best`` (``choose``'s order)."""
    if beats(best, candidate, record.float_size):
        return False
    order = {id(c): i for i, c in enumerate(record.candidates)}
    return beats(candidate, best, record.float_size) or \
        (candidate.size_bytes, order[id(candidate)]) < (best.size_bytes, order[id(best)])


def _evaluate(pipeline: Pipeline, candidate: Candidate, current: Step, reference: Evaluation,
              float_accuracy: float | None) -> None:
    assert candidate.model is not None
    pipeline.report(f"evaluating {candidate.label}")
    candidate.step = pipeline.step(candidate.pass_name, candidate.model, candidate.config, current, reference,
                                   float_accuracy, candidate.latency)  # timed once: what decided is what is shown
    candidate.latency = candidate.step.latency
    candidate.status = "within budget" if candidate.step.within_budget else "over budget"
