"""After the pipeline, before the bundle: what a compile found beyond its accuracy budget.

- memory of every step (``compiler.memory``: weights in memory, peak working memory of one
  inference), for the step table, the manifest and MLflow;
- warnings (``compiler.checks.degenerate``: a float model with one answer for most images);
- the comparison with the production model (``compiler.champion``); ``Review.check`` fails the
  compile (``RegressionError``) when the bundle is further below it than the target's budget.

One call, ``review``, from the compile command: the pipeline itself stays about the passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.champion import Champion, Comparison
from compiler.checks import degenerate
from compiler.description import ModelDescription
from compiler.evaluate import ImageSet
from compiler.iospec import io_for
from compiler.memory import Memory, measure
from compiler.pipeline import CompileResult, Step
from compiler.target import TargetProfile


@dataclass
class Review:
    memory: list[Memory] = field(default_factory=list)  # per step of the result, in order
    warnings: list[str] = field(default_factory=list)
    champion: Comparison | None = None

    def check(self) -> None:
        """Fail the compile (RegressionError) for a regression against the champion not allowed."""
        if self.champion is not None:
            self.champion.check()


def step_memory(step: Step, description: ModelDescription, evaluation: ImageSet, threads: int) -> Memory:
    io = io_for(step.model, description)
    name = io.inputs[0].name
    feeds, _ = evaluation.inputs(io.preprocessing, name)
    return measure(step.model, {name: feeds[0][name]}, threads)


def review(result: CompileResult, description: ModelDescription, evaluation: ImageSet, target: TargetProfile,
           champion: Champion | None = None, allow_regression: bool = False) -> Review:
    out = Review(memory=[step_memory(s, description, evaluation, target.host_threads) for s in result.steps])
    warning = degenerate(result.reference, description.task, description.labels, evaluation.truth)
    if warning is not None:
        out.warnings.append(warning)
    if champion is not None and result.final.accuracy is not None:
        out.champion = Comparison(champion, result.final.accuracy, result.float_step.accuracy,
                                  target.budget.max_accuracy_drop, allow_regression)
        if out.champion.regressed:
            out.warnings.append(f"shipped despite a regression (--allow-regression): {out.champion.line()}")
    return out
