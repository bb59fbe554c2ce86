"""The compile-time regression check against the model in production (the champion).

Fidelity compares a compiled model with its own float model, so a new model version with a
broken head compiles with fidelity 1.0. When the evaluation images carry labels and the MLflow
registry holds a current production version (an alias, ``@champion`` by default), the champion
is resolved to its version, run in float with onnxruntime on the same evaluation images through
the agent's own path, and its accuracy against the labels is the bar: a bundle whose accuracy is
more than the target's ``max_accuracy_drop`` below it fails the compile, unless
``--allow-regression``.

What ships is compared with what the champion scores in float: the champion's own bundle is at
most its target's budget below that, so this is the conservative side of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from agent.model import LoadedModel
from compiler.description import ModelDescription
from compiler.errors import CompilerError, RegressionError
from compiler.evaluate import ImageSet, run_model
from compiler.iospec import io_for
from compiler.metrics import multilabel_f1, top1_accuracy
from contract.common import Runtime
from contract.manifest import Task

DEFAULT_ALIAS = "champion"


@dataclass(frozen=True)
class Champion:
    uri: str  # as asked, e.g. models:/fridge@champion
    resolved: str  # models:/fridge/3
    accuracy: float  # in float, on the evaluation images, against their labels


@dataclass(frozen=True)
class Comparison:
    champion: Champion
    accuracy: float  # the compiled model's
    float_accuracy: float | None  # the new float model's
    budget: float  # the target's max_accuracy_drop
    allowed: bool  # --allow-regression

    @property
    def drop(self) -> float:
        return self.champion.accuracy - self.accuracy

    @property
    def regressed(self) -> bool:
        return self.drop > self.budget + 1e-9

    def line(self) -> str:
        new_float = "" if self.float_accuracy is None else f" (its float model {self.float_accuracy:.4f})"
        verdict = "over budget" if self.regressed else "within budget"
        return (f"accuracy {self.accuracy:.4f}{new_float} vs champion {self.champion.resolved} "
                f"{self.champion.accuracy:.4f}: {-self.drop:+.4f}, {verdict} (max drop {self.budget:.4f})")

    def check(self) -> None:
        """Raise RegressionError when the bundle is further below the champion than the budget allows."""
        if self.regressed and not self.allowed:
            raise RegressionError(f"{self.line()}; the new model is worse than the one in production: fix it, "
                                  "or pass --allow-regression to ship it anyway")


def accuracy(task: Task, labels: list[str], predictions: list, truth: object) -> float:  # type: ignore[type-arg]
    if task is Task.MULTILABEL:
        return multilabel_f1(predictions, truth, labels)  # type: ignore[arg-type]
    return top1_accuracy(predictions, truth)  # type: ignore[arg-type]


def default_uri(name: str) -> str:
    return f"models:/{name}@{DEFAULT_ALIAS}"


def find(uri: str, tracking_uri: str, description: ModelDescription, evaluation: ImageSet, workdir: Path,
         opset: int, threads: int) -> tuple[Champion | None, str]:
    """The champion measured on ``evaluation``, or None and why there is no comparison."""
    if evaluation.truth is None:
        return None, "no comparison with the champion: the evaluation images have no labels.csv"
    if description.task is Task.DETECTION:
        return None, "no comparison with the champion: detection labels are not read"
    from compiler import intake

    try:
        source = intake.resolve(uri, None, workdir, tracking_uri, opset)
    except CompilerError as exc:
        return None, f"no comparison with the champion: {exc}"
    desc = source.description
    if desc.task is not description.task or list(desc.labels) != list(description.labels):
        return None, (f"no comparison with the champion {source.info.source_uri}: its task or labels differ from "
                      "this model's")
    try:
        io = io_for(source.path, desc)
        with LoadedModel.open(source.path, io, Runtime.ONNXRUNTIME, threads) as model:
            run = run_model(model, evaluation)
    except (CompilerError, AgentError) as exc:
        return None, f"no comparison with the champion {source.info.source_uri}: {exc}"
    score = accuracy(desc.task, list(desc.labels), run.predictions, evaluation.truth)
    return Champion(uri, source.info.source_uri, score), ""
