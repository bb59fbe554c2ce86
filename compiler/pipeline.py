"""The accuracy-aware compile pipeline: the target's passes in order, each measured, each held
to the target's budget.

- Every step is measured: size, parameters, FLOPs, sparsity, fidelity against the float
  model (and accuracy when the evaluation images carry labels), latency on this host with the
  target's runtime.
- A pass spec with ``search`` tries its values in order (e.g. pruning ratios, largest first)
  and keeps the first result within budget; ``optional`` passes that never fit are skipped.
- ``quantize.static`` over budget: nodes are ranked by per-node sensitivity and the most
  sensitive are kept in float, 1, 2, 4, ... at a time, until the budget holds. What was kept
  in float, and why, is reported.
- If nothing fits, BudgetError carries the best result found.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.model import LoadedModel
from compiler import onnxio
from compiler.description import ModelDescription
from compiler.errors import BudgetError, CompilerError, PassError, UnsupportedOpsError, first_line
from compiler.evaluate import ImageSet, Run, latency_ms, postprocess_all, run_model
from compiler.graph import GraphStats, stats
from compiler.iospec import io_for
from compiler.metrics import detection_map, label_agreement, multilabel_f1, top1_accuracy, top1_agreement
from compiler.passes import get_pass
from compiler.passes.base import PassConfig
from compiler.sensitivity import node_sensitivity
from compiler.target import PassSpec, TargetProfile
from contract.common import Runtime
from contract.manifest import IOSpec, Task

Progress = Callable[[str], None]
DETECTION_RANKING_THRESHOLD = 0.05


@dataclass
class Step:
    name: str
    model: Path
    config: dict[str, Any]
    stats: GraphStats
    fidelity: float
    accuracy: float | None
    latency_p50: float
    latency_p95: float
    within_budget: bool
    note: str = ""


@dataclass
class CompileResult:
    steps: list[Step]
    io: IOSpec
    reference: Run
    kept_in_float: list[tuple[str, float]] = field(default_factory=list)

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
                 evaluation: ImageSet, workdir: Path, progress: Progress = lambda _: None) -> None:
        self.description = description
        self.target = target
        self.calibration = calibration
        self.evaluation = evaluation
        self.workdir = workdir.resolve()  # passes hand paths below it to subprocesses with other cwds
        self.progress = progress
        self.task = description.task
        self.min_fidelity = target.budget.min_fidelity[self.task.value]
        self.steps: list[Step] = []  # the steps kept so far: what a failed compile still reports
        self.stage = "starting"  # what the pipeline is doing now: where a failed compile stopped

    # ---- measuring ------------------------------------------------------------------------
    def _open(self, model: Path, io: IOSpec) -> LoadedModel:
        return LoadedModel.open(model, io, evaluation_runtime(model), self.target.host_threads)

    def fidelity(self, reference: Run, run: Run, io: IOSpec) -> float:
        if self.task is Task.DETECTION:
            # The float model's detections at the deployed threshold are the ground truth; the
            # candidate's are ranked from a low threshold, as mAP evaluation does, so a score that
            # moves from 0.36 to 0.34 costs a little precision, not a whole missed box.
            _, places = self.evaluation.inputs(io.preprocessing, io.inputs[0].name)
            ranked = postprocess_all(run.outputs, io, places, {"score_threshold": DETECTION_RANKING_THRESHOLD})
            return detection_map(reference.predictions, ranked)
        if self.task is Task.MULTILABEL:
            return label_agreement(reference.predictions, run.predictions, io.labels)
        return top1_agreement(reference.predictions, run.predictions)

    def accuracy(self, run: Run) -> float | None:
        truth = self.evaluation.truth
        if truth is None:
            return None
        if self.task is Task.MULTILABEL:
            return multilabel_f1(run.predictions, truth, self.description.labels)
        return top1_accuracy(run.predictions, truth)

    def measure(self, name: str, model: Path, config: dict[str, Any], reference: Run | None,
                float_accuracy: float | None) -> tuple[Step, Run, IOSpec]:
        io = io_for(model, self.description)
        with self._open(model, io) as loaded:
            run = run_model(loaded, self.evaluation)
            feeds, _ = self.evaluation.inputs(io.preprocessing, io.inputs[0].name)
            p50, p95 = latency_ms(loaded, feeds[0][io.inputs[0].name])
        fidelity = 1.0 if reference is None else self.fidelity(reference, run, io)
        accuracy = self.accuracy(run)
        within = fidelity >= self.min_fidelity and (
            accuracy is None or float_accuracy is None
            or float_accuracy - accuracy <= self.target.budget.max_accuracy_drop)
        step = Step(name, model, config, stats(model), fidelity, accuracy, p50, p95, within)
        return step, run, io

    # ---- running ------------------------------------------------------------------------
    def _config(self, spec: PassSpec, overrides: dict[str, Any]) -> tuple[PassConfig, dict[str, Any]]:
        cls = get_pass(spec.name)
        values = {**spec.config, **overrides}
        fields = cls.Config.model_fields
        if "calibration" in fields:
            values["calibration"] = self.calibration_file()
        if "opset" in fields and values.get("opset") is None:
            values["opset"] = self.target.opset
        if "preprocessing" in fields:  # fold.normalize: what the agent would do to frames, and where they go
            values.update(preprocessing=self.description.preprocessing, input=self.description.input.name)
        config = cls.config(values)
        return config, config.model_dump(mode="json")

    def calibration_file(self) -> Path:
        path = self.workdir / "calibration.npz"
        if not path.exists():
            io = io_for(self.workdir / "float" / "model.onnx", self.description)
            feeds, _ = self.calibration.inputs(io.preprocessing, io.inputs[0].name)
            name = io.inputs[0].name
            arrays: dict[str, Any] = {name: np.concatenate([f[name] for f in feeds])}
            np.savez(path, **arrays)
        return path

    def apply_pass(self, spec: PassSpec, model: Path, overrides: dict[str, Any],
                   tag: str) -> tuple[Path, dict[str, Any]]:
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
        self.stage = "checking the model's ops"
        self.check_ops(source)
        float_dir = self.workdir / "float"
        float_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, float_dir / "model.onnx")
        self.report("measuring the float model")
        float_step, reference, _ = self.measure("float", float_dir / "model.onnx", {}, None, None)
        steps, current = self.steps, float_step
        steps[:] = [float_step]
        kept: list[tuple[str, float]] = []
        for index, spec in enumerate(self.target.passes):
            self.report(f"pass {spec.name}")
            tag = f"{index:02d}-{spec.name}"
            if spec.search:
                step = self._search(spec, current, reference, float_step.accuracy, tag)
            else:
                out, record = self.apply_pass(spec, current.model, {}, tag)
                if out == current.model:  # the pass found nothing to change
                    self.report(f"pass {spec.name}: nothing to change")
                    continue
                step, _, _ = self.measure(spec.name, out, record, reference, float_step.accuracy)
                if not step.within_budget and "exclude_nodes" in get_pass(spec.name).Config.model_fields:
                    step, kept = self._fallback(spec, current, step, reference, float_step.accuracy, tag)
            if step is None:
                continue
            if not step.within_budget:
                raise BudgetError(f"{spec.name} is over budget; " + self._over_budget(step), best=step)
            steps.append(step)
            current = step
        self.stage = "checking the memory budget"
        limit = self.target.memory.max_model_mb * 1024 * 1024
        if current.stats.size_bytes > limit:
            raise BudgetError(f"the compiled model is {current.stats.size_bytes / 2**20:.1f} MiB, more than "
                              f"{self.target.name}'s max_model_mb of {self.target.memory.max_model_mb}", best=current)
        return CompileResult(steps, io_for(current.model, self.description), reference, kept)

    def _search(self, spec: PassSpec, current: Step, reference: Run, float_accuracy: float | None,
                tag: str) -> Step | None:
        (key, values), = spec.search.items()
        best: Step | None = None
        for value in values:
            self.report(f"pass {spec.name}: trying {key}={value}")
            out, record = self.apply_pass(spec, current.model, {key: value}, f"{tag}-{key}-{value}")
            step, _, _ = self.measure(spec.name, out, record, reference, float_accuracy)
            if step.within_budget and step.fidelity >= (spec.min_fidelity or 0.0):
                step.note = f"{key}={value}: first value within budget of {values}"
                return step
            best = step if best is None or step.fidelity > best.fidelity else best
        if spec.optional:
            self.report(f"pass {spec.name}: no {key} in {values} fits the budget; skipped")
            return None
        raise BudgetError(f"no {key} in {values} keeps {spec.name} within budget; " + self._over_budget(best),
                          best=best)

    def _fallback(self, spec: PassSpec, current: Step, failed: Step, reference: Run, float_accuracy: float | None,
                  tag: str) -> tuple[Step, list[tuple[str, float]]]:
        """Keep nodes in float until int8 fits: first the most sensitive nodes (1, 4, 16), then the
        input stem (the first 4, 8, 16, 32 nodes in graph order), where early high-resolution
        activations often carry the loss and isolated float islands only add requantization."""
        self.report("int8 over budget: ranking nodes by quantization sensitivity")
        ranking = [r for r in node_sensitivity(current.model, failed.model, self.calibration_file()) if r[1] > 0]
        error = dict(ranking)
        order = [n.name for n in onnxio.load(current.model).graph.node if n.name]
        cap = spec.max_float_nodes
        candidates = [(f"the {k} most sensitive node(s)", ranking[:k])
                      for k in (1, 4, 16) if k <= min(len(ranking), cap)]
        candidates += [(f"the first {k} nodes (input stem)", [(n, error.get(n, 0.0)) for n in order[:k]])
                       for k in (4, 8, 16, 32) if k <= min(len(order), cap)]
        excluded_before = list(spec.config.get("exclude_nodes", []))
        best = failed
        for index, (what, kept) in enumerate(candidates):
            self.report(f"int8 over budget: keeping {what} in float")
            out, record = self.apply_pass(spec, current.model,
                                          {"exclude_nodes": excluded_before + [n for n, _ in kept]},
                                          f"{tag}-float{index}")
            step, _, _ = self.measure(spec.name, out, record, reference, float_accuracy)
            if step.within_budget:
                step.note = f"kept {what} in float: " + ", ".join(f"{n} (error {e:.4f})" for n, e in kept)
                return step, kept
            best = step if step.fidelity > best.fidelity else best
        raise BudgetError(f"int8 stays over budget with up to {cap} nodes kept in float; " + self._over_budget(best),
                          best=best)

    def _over_budget(self, step: Step | None) -> str:
        if step is None:
            return "nothing was measured"
        acc = "" if step.accuracy is None else f", accuracy {step.accuracy:.4f}"
        return (f"best found: {step.name} with fidelity {step.fidelity:.4f} (budget {self.min_fidelity:.4f}){acc}, "
                f"{step.stats.size_bytes} bytes; relax the budget (--min-fidelity) or change the target's passes")

