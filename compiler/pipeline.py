"""The accuracy-aware compile pipeline: the target's passes in order, each measured, each held
to the target's budget.

- Every step is measured: size, parameters, FLOPs, sparsity, what it computes in (precision
  read from the graph), fidelity against the float model (and accuracy when the evaluation
  images carry labels), latency interleaved with the float model on this host.
- A pass that is exact in float (``Pass.exact``) is checked on a few calibration frames
  instead of re-evaluated; if its outputs moved, it is evaluated like any other.
- Evaluations are cached by model bytes and counted (``counts``); ``max_evaluations`` caps them.
- A pass spec with ``search`` tries its values in order (e.g. pruning ratios, largest first)
  and keeps the first result within budget; ``optional`` passes that never fit are skipped,
  with a row that says what was tried.
- A quantization pass over budget widens into a search (``compiler.search``): nodes kept in
  float, then the spec's alternatives; the smallest/fastest configuration within budget ships,
  with the front of candidates tried. If nothing fits, BudgetError carries the front.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.model import LoadedModel
from compiler import onnxio
from compiler.description import ModelDescription
from compiler.errors import BudgetError, CompilerError, EvaluationCapReached, PassError, UnsupportedOpsError, first_line
from compiler.evalcache import Counts, Evaluation, EvaluationCache
from compiler.evaluate import ImageSet, postprocess_all, run_model
from compiler.graph import GraphStats, stats
from compiler.iospec import io_for
from compiler.latency import Latency, alone, interleaved
from compiler.metrics import detection_map, label_agreement, multilabel_f1, top1_accuracy, top1_agreement
from compiler.passes import get_pass
from compiler.passes.base import PassConfig
from compiler.passes.calibration import fingerprint
from compiler.precision import describe
from compiler.sensitivity import Screen
from compiler.target import PassSpec, TargetProfile
from contract.common import Runtime
from contract.manifest import IOSpec, Task

if TYPE_CHECKING:
    from compiler.search import SearchRecord

Progress = Callable[[str], None]
DETECTION_RANKING_THRESHOLD = 0.05
EXACT_TOLERANCE = 1e-4  # largest output change, relative to the output's range, of an exact pass
CHECK_FRAMES = 8  # calibration frames an exact pass is checked on


@dataclass
class Step:
    name: str
    model: Path
    config: dict[str, Any]
    stats: GraphStats
    fidelity: float
    accuracy: float | None
    latency: Latency
    within_budget: bool
    precision: str = ""  # what the model computes in, read from the graph (compiler.precision)
    note: str = ""
    evaluated: bool = True  # False: an exact pass, checked on calibration frames; fidelity carried over
    kept: bool = True  # False: tried and not kept (a row of the table, not a step of the bundle)

    @property
    def latency_p50(self) -> float:
        return self.latency.p50_ms

    @property
    def latency_p95(self) -> float:
        return self.latency.p95_ms


@dataclass
class CompileResult:
    steps: list[Step]
    io: IOSpec
    reference: Evaluation
    kept_in_float: list[tuple[str, float]] = field(default_factory=list)
    rows: list[Step] = field(default_factory=list)  # every step measured, kept or not, in order
    searches: list[SearchRecord] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)

    @property
    def float_step(self) -> Step:
        return self.steps[0]

    @property
    def final(self) -> Step:
        return self.steps[-1]


def evaluation_runtime(model: Path) -> Runtime:
    """The runtime that measures a model file on the build host: LiteRT for .tflite, onnxruntime
    for ONNX (TensorRT bundles are validated as ONNX with onnxruntime on the CPU)."""
    return Runtime.LITERT if model.suffix == ".tflite" else Runtime.ONNXRUNTIME


class Pipeline:
    def __init__(self, description: ModelDescription, target: TargetProfile, calibration: ImageSet,
                 evaluation: ImageSet, workdir: Path, progress: Progress = lambda _: None,
                 cache: EvaluationCache | None = None, max_evaluations: int | None = None) -> None:
        self.description = description
        self.target = target
        self.calibration = calibration
        self.evaluation = evaluation
        self.workdir = workdir.resolve()  # passes hand paths below it to subprocesses with other cwds
        self.progress = progress
        self.task = description.task
        self.min_fidelity = target.budget.min_fidelity[self.task.value]
        self.cache = cache if cache is not None else EvaluationCache()
        self.max_evaluations = max_evaluations
        self.counts = Counts()
        self.steps: list[Step] = []  # the steps kept so far: what a failed compile still reports
        self.rows: list[Step] = []  # every step measured, kept or not
        self.searches: list[SearchRecord] = []
        self.kept_in_float: list[tuple[str, float]] = []
        self.stage = "starting"  # what the pipeline is doing now: where a failed compile stopped
        self._float: tuple[LoadedModel, Any] | None = None  # the latency reference and its input
        self._calibration_record: dict[str, str | int] | None = None  # calibration_file()'s fingerprint

    # ---- measuring ------------------------------------------------------------------------
    def open(self, model: Path, io: IOSpec | None = None) -> LoadedModel:
        io = io or io_for(model, self.description)
        return LoadedModel.open(model, io, evaluation_runtime(model), self.target.host_threads)

    def evaluate(self, model: Path, io: IOSpec) -> Evaluation:
        """The model's predictions on the evaluation set: from the cache, else run (and counted)."""
        key = EvaluationCache.key(model, self.evaluation.sha256, io)
        found = self.cache.get(key)
        if found is not None:
            self.counts.cache_hits += 1
            return found
        if self.max_evaluations is not None and self.counts.evaluations >= self.max_evaluations:
            raise EvaluationCapReached(f"the evaluation cap (--max-evaluations {self.max_evaluations}) is reached")
        with self.open(model, io) as loaded:
            run = run_model(loaded, self.evaluation)
        ranked = None
        if self.task is Task.DETECTION:
            # The float model's detections at the deployed threshold are the ground truth; the
            # candidate's are ranked from a low threshold, as mAP evaluation does, so a score that
            # moves from 0.36 to 0.34 costs a little precision, not a whole missed box.
            _, places = self.evaluation.inputs(io.preprocessing, io.inputs[0].name)
            ranked = postprocess_all(run.outputs, io, places, {"score_threshold": DETECTION_RANKING_THRESHOLD})
        self.counts.evaluations += 1
        self.counts.images += len(self.evaluation.frames)
        evaluation = Evaluation(run.predictions, ranked)
        self.cache.put(key, evaluation)
        return evaluation

    def fidelity(self, reference: Evaluation, candidate: Evaluation, io: IOSpec) -> float:
        if self.task is Task.DETECTION:
            return detection_map(reference.predictions, candidate.ranked or [])
        if self.task is Task.MULTILABEL:
            return label_agreement(reference.predictions, candidate.predictions, io.labels)
        return top1_agreement(reference.predictions, candidate.predictions)

    def accuracy(self, evaluation: Evaluation) -> float | None:
        truth = self.evaluation.truth
        if truth is None:
            return None
        if self.task is Task.MULTILABEL:
            return multilabel_f1(evaluation.predictions, truth, self.description.labels)
        return top1_accuracy(evaluation.predictions, truth)

    def time(self, model: Path, io: IOSpec | None = None) -> Latency:
        """Latency on this host, interleaved with the float reference (set by measuring the float)."""
        with self.open(model, io) as loaded:
            x = loaded.blank()
            if self._float is None:
                return alone(loaded, x)
            reference, x_reference = self._float
            return interleaved(loaded, reference, x, x_reference)

    def within(self, fidelity: float, accuracy: float | None, float_accuracy: float | None) -> bool:
        return fidelity >= self.min_fidelity and (
            accuracy is None or float_accuracy is None
            or float_accuracy - accuracy <= self.target.budget.max_accuracy_drop)

    def measure(self, name: str, model: Path, config: dict[str, Any], reference: Evaluation | None,
                float_accuracy: float | None, timed: Latency | None = None) -> tuple[Step, Evaluation, IOSpec]:
        """``reference`` None: ``model`` is the float model, and becomes the latency reference.
        ``timed``: the model's latency, measured already (it is not timed again)."""
        io = io_for(model, self.description)
        evaluation = self.evaluate(model, io)
        if reference is None:
            self.close()
            loaded = self.open(model, io)
            self._float = (loaded, loaded.blank())
            latency = alone(*self._float)
        else:
            latency = timed or self.time(model, io)
        fidelity = 1.0 if reference is None else self.fidelity(reference, evaluation, io)
        accuracy = self.accuracy(evaluation)
        step = Step(name, model, config, stats(model), fidelity, accuracy, latency,
                    self.within(fidelity, accuracy, float_accuracy), describe(model).label)
        return step, evaluation, io

    def frames(self, count: int = CHECK_FRAMES) -> list[np.ndarray]:
        """``count`` calibration frames spread over the set (checks and screenings run on these)."""
        stride = max(1, len(self.calibration.frames) // count)
        return self.calibration.frames[::stride][:count]

    def check_exact(self, name: str, model: Path, config: dict[str, Any], before: Step,
                    timed: Latency | None = None) -> Step | None:
        """The step of a pass that is exact in float, if its outputs match ``before``'s on a few
        calibration frames (None: they moved, and the step must be evaluated)."""
        frames = self.frames()
        with self.open(before.model) as reference, self.open(model) as candidate:
            difference = Screen(reference, frames).max_difference(candidate)
        self.counts.screenings += 1
        self.counts.screened_frames += len(frames)
        if difference > EXACT_TOLERANCE:
            self.report(f"pass {name}: outputs moved by {difference:.2g} of their range: evaluating it")
            return None
        return Step(name, model, config, stats(model), before.fidelity, before.accuracy, timed or self.time(model),
                    before.within_budget, describe(model).label, evaluated=False,
                    note=f"exact in float: outputs within {difference:.1g} of the step before on {len(frames)} "
                         "calibration frames (not re-evaluated)")

    def step(self, spec_name: str, model: Path, config: dict[str, Any], before: Step, reference: Evaluation,
             float_accuracy: float | None, timed: Latency | None = None) -> Step:
        """A pass's output measured: checked if the pass is exact in float, else evaluated."""
        if get_pass(spec_name).exact:
            checked = self.check_exact(spec_name, model, config, before, timed)
            if checked is not None:
                return checked
        return self.measure(spec_name, model, config, reference, float_accuracy, timed)[0]

    def close(self) -> None:
        if self._float is not None:
            self._float[0].close()
            self._float = None

    # ---- running ------------------------------------------------------------------------
    def _config(self, spec: PassSpec | Any, overrides: dict[str, Any]) -> tuple[PassConfig, dict[str, Any]]:
        cls = get_pass(spec.name)
        values = {**spec.config, **overrides}
        fields = cls.Config.model_fields
        if "calibration" in fields:
            values["calibration"] = self.calibration_file()
        if "cache_dir" in fields:
            values["cache_dir"] = self.workdir / "cache"
        if "opset" in fields and values.get("opset") is None:
            values["opset"] = self.target.opset
        if "preprocessing" in fields:  # fold.normalize: what the agent would do to frames, and where they go
            values.update(preprocessing=self.description.preprocessing, input=self.description.input.name)
        config = cls.config(values)
        return config, self._record(config)

    def _record(self, config: PassConfig) -> dict[str, Any]:
        """The config as the pass record (manifest, MLflow) keeps it: no path of this host. The
        calibration tensors are named by content (``calibration.fingerprint``), any other path
        (onnx2tf's environment) by its last part; the work folders' caches are left out."""
        record: dict[str, Any] = config.model_dump(mode="json", exclude={"cache_dir"})
        for name in type(config).model_fields:
            value = getattr(config, name)
            if isinstance(value, Path) and name in record:
                if name == "calibration":
                    if self._calibration_record is None:
                        self._calibration_record = fingerprint(value)
                    record[name] = self._calibration_record
                else:
                    record[name] = value.name
        return record

    def calibration_file(self) -> Path:
        path = self.workdir / "calibration.npz"
        if not path.exists():
            io = io_for(self.workdir / "float" / "model.onnx", self.description)
            feeds, _ = self.calibration.inputs(io.preprocessing, io.inputs[0].name)
            name = io.inputs[0].name
            arrays: dict[str, Any] = {name: np.concatenate([f[name] for f in feeds])}
            np.savez(path, **arrays)
        return path

    def apply_pass(self, spec: PassSpec | Any, model: Path, overrides: dict[str, Any],
                   tag: str) -> tuple[Path, dict[str, Any]]:
        """``spec``: a PassSpec or an Alternative (a pass name and its config)."""
        config, record = self._config(spec, overrides)
        workdir = self.workdir / tag
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            out = get_pass(spec.name)().run(model, config, workdir)
        except CompilerError:
            raise
        except Exception as exc:  # a pass's bug or a library's refusal: one line that names the pass
            raise PassError(f"pass {spec.name} failed: {type(exc).__name__}: {first_line(exc)}") from exc
        return out, record

    def check_ops(self, source: Path) -> None:
        """Refuse early, naming them, ops the target's runtime cannot run."""
        blocked = set(self.target.runtime.unsupported_ops)
        found = {(n.domain or "ai.onnx", n.op_type) for n in onnxio.load(source).graph.node}
        bad = sorted(f"{op} ({domain})" for domain, op in found if op in blocked or f"{domain}:*" in blocked)
        if bad:
            raise UnsupportedOpsError(f"{self.target.runtime.name.value} on {self.target.name} cannot run "
                                      f"{', '.join(bad)}; choose another target or replace these ops")

    def report(self, stage: str) -> None:
        self.stage = stage
        self.progress(stage)

    def run(self, source: Path) -> CompileResult:
        try:
            return self._run(source)
        finally:
            self.close()

    def _run(self, source: Path) -> CompileResult:
        from compiler.search import can_widen, widen

        self.stage = "checking the model's ops"
        self.check_ops(source)
        float_dir = self.workdir / "float"
        float_dir.mkdir(parents=True, exist_ok=True)
        onnxio.copy(source, float_dir / "model.onnx")  # with any data file a model over 2 GB has
        self.report("measuring the float model")
        float_step, reference, _ = self.measure("float", float_dir / "model.onnx", {}, None, None)
        steps, current = self.steps, float_step
        steps[:] = [float_step]
        self.rows[:] = [float_step]
        for index, spec in enumerate(self.target.passes):
            self.report(f"pass {spec.name}")
            tag = f"{index:02d}-{spec.name}"
            step: Step | None
            if spec.search:
                step = self._search(spec, current, reference, float_step.accuracy, tag)
            else:
                out, record = self.apply_pass(spec, current.model, {}, tag)
                if out == current.model:  # the pass found nothing to change
                    self.report(f"pass {spec.name}: nothing to change")
                    continue
                step = self.step(spec.name, out, record, current, reference, float_step.accuracy)
                if not step.within_budget and can_widen(spec):
                    self.rows.append(step)
                    step = widen(self, spec, current, step, reference, float_step.accuracy, tag)
            if step is None:
                continue
            if not step.within_budget:
                self.rows.append(step)
                raise BudgetError(f"{spec.name} is over budget; " + self.over_budget(step), best=step)
            if step not in self.rows:
                self.rows.append(step)
            steps.append(step)
            current = step
        self.stage = "checking the memory budget"
        limit = self.target.memory.max_model_mb * 1024 * 1024
        if current.stats.size_bytes > limit:
            raise BudgetError(f"the compiled model is {current.stats.size_bytes / 2**20:.1f} MiB, more than "
                              f"{self.target.name}'s max_model_mb of {self.target.memory.max_model_mb}", best=current)
        return CompileResult(steps, io_for(current.model, self.description), reference, self.kept_in_float,
                             self.rows, self.searches, self.counts)

    def _search(self, spec: PassSpec, current: Step, reference: Evaluation, float_accuracy: float | None,
                tag: str) -> Step | None:
        (key, values), = spec.search.items()
        best: Step | None = None
        tried: list[Any] = []
        try:
            for value in values:
                self.report(f"pass {spec.name}: trying {key}={value}")
                out, record = self.apply_pass(spec, current.model, {key: value}, f"{tag}-{key}-{value}")
                step, _, _ = self.measure(spec.name, out, record, reference, float_accuracy)
                tried.append(value)
                if step.within_budget and step.fidelity >= (spec.min_fidelity or 0.0):
                    step.note = (f"{key}={value}: first value within budget of {values}; parameters "
                                 f"{current.stats.parameters:,} -> {step.stats.parameters:,}")
                    return step
                best = step if best is None or step.fidelity > best.fidelity else best
            stop = ""
        except EvaluationCapReached as exc:
            if not spec.optional:
                raise
            stop = f"; stopped: {exc}"
        floor = max(self.min_fidelity, spec.min_fidelity or 0.0)
        if spec.optional:
            if best is not None:
                best.kept, best.within_budget = False, False
                best.note = (f"not kept: no {key} in {tried} reached fidelity {floor:.4f} (best: "
                             f"{best.config.get(key)}, {best.fidelity:.4f}); pass skipped{stop}")
                self.rows.append(best)
            self.report(f"pass {spec.name}: no {key} in {values} fits the budget; skipped")
            return None
        raise BudgetError(f"no {key} in {values} keeps {spec.name} within budget; " + self.over_budget(best),
                          best=best)

    def over_budget(self, step: Step | None) -> str:
        if step is None:
            return "nothing was measured"
        acc = "" if step.accuracy is None else f", accuracy {step.accuracy:.4f}"
        return (f"best found: {step.name} with fidelity {step.fidelity:.4f} (budget {self.min_fidelity:.4f}){acc}, "
                f"{step.stats.size_bytes} bytes")
