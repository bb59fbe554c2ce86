"""Checks that need no model run, and one on the float model's own predictions.

- ``check_description``: the model description against the graph's input (name, rank, static
  shape, layout, dtype), every mismatch named in one ``DescriptionError`` before onnxruntime
  ever sees the model (a mismatch used to end in an onnxruntime traceback at the first run).
- ``degenerate``: a warning when the float model gives one answer for most evaluation images
  (one class, one label set, no detection): a random-weight or broken model agrees perfectly
  with itself, so fidelity alone says 1.0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from compiler import onnxio
from compiler.description import ModelDescription
from compiler.errors import DescriptionError
from compiler.evalcache import Evaluation
from compiler.evaluate import Run
from compiler.iospec import onnx_dtype
from contract.manifest import Layout, Task

DEGENERATE_SHARE = 0.8  # one answer for more than this share of the images is suspicious
DEGENERATE_MIN_IMAGES = 10
DEGENERATE_MARGIN = 0.1  # labels that say the same for nearly as many images: the data is like that


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]


def _show(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def check_description(model: Path, description: ModelDescription) -> None:
    """Raise ``DescriptionError`` naming every way ``description`` does not fit ``model``'s input."""
    proto = onnxio.load(model)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    name = description.input.name
    found = next((i for i in inputs if i.name == name), None)
    if found is None:
        raise DescriptionError(f"the description names input {name!r}; the graph's inputs are "
                               f"{[i.name for i in inputs]}: set input.name in model.yaml")
    pre = description.preprocessing
    problems = []
    if description.input.layout is not pre.layout:
        problems.append(f"input.layout is {description.input.layout.value} but preprocessing.layout is "
                        f"{pre.layout.value}: the frames would be fed in the other layout")
    graph = _dims(found)
    fed = [1, 3, pre.height, pre.width] if pre.layout is Layout.NCHW else [1, pre.height, pre.width, 3]
    if len(graph) != 4:
        problems.append(f"the graph's input {name!r} has rank {len(graph)} {_show(graph)}; image "
                        "preprocessing expects 4 (batch, channels, height, width)")
    elif any(isinstance(g, int) and g != f for g, f in zip(graph, fed, strict=True)):
        axes = ("batch", "channels", "height", "width") if pre.layout is Layout.NCHW else \
            ("batch", "height", "width", "channels")
        wrong = [f"{axis} {f} where the graph has {g}" for axis, g, f in zip(axes, graph, fed, strict=True)
                 if isinstance(g, int) and g != f]
        shape = (f"the preprocessing gives {_show(fed)} ({pre.layout.value}), the graph's input {name!r} "
                 f"is {_show(graph)}: " + "; ".join(wrong))
        other = [graph[0], graph[3], graph[1], graph[2]] if pre.layout is Layout.NHWC else \
            [graph[0], graph[2], graph[3], graph[1]]
        swapped = [1, pre.height, pre.width, 3] if pre.layout is Layout.NCHW else [1, 3, pre.height, pre.width]
        if all(not isinstance(g, int) or g == s for g, s in zip(graph, swapped, strict=True)):
            shape += (f"; the graph's input looks {'NHWC' if pre.layout is Layout.NCHW else 'NCHW'}: set "
                      "input.layout and preprocessing.layout to match it")
        elif other != graph:
            shape += "; set preprocessing.width/height to the graph's"
        problems.append(shape)
    dtype = onnx_dtype(found.type.tensor_type.elem_type)
    if dtype != pre.dtype:
        problems.append(f"preprocessing.dtype {pre.dtype} does not match the graph's input {name!r} is {dtype}")
    if problems:
        raise DescriptionError(f"the model description does not fit {model.name}:" +
                               "".join(f"\n  - {p}" for p in problems))


def _answer(prediction_labels: set[str], task: Task, top: str) -> str:
    if task is Task.CLASSIFICATION:
        return f"{top!r}"
    if task is Task.DETECTION and not prediction_labels:
        return "no detection"
    return "{" + ", ".join(sorted(prediction_labels)) + "}"


def degenerate(reference: Run | Evaluation, task: Task, labels: Sequence[str], truth: np.ndarray | None) -> str | None:
    """A warning when one answer covers most evaluation images, unless the labels say the same."""
    predictions = reference.predictions
    if len(predictions) < DEGENERATE_MIN_IMAGES:
        return None

    def top(scores: np.ndarray) -> str:
        return labels[int(np.argmax(scores))] if scores.size else ""

    answers = [_answer(p.labels, task, top(p.scores)) for p in predictions]
    answer, count = Counter(answers).most_common(1)[0]
    share = count / len(answers)
    if share <= DEGENERATE_SHARE:
        return None
    if truth is not None:
        if task is Task.CLASSIFICATION:
            expected = [repr(labels[int(t)]) for t in truth]
        else:
            expected = ["{" + ", ".join(sorted(lab for lab, v in zip(labels, row, strict=True) if v > 0.5)) + "}"
                        for row in truth]
        if expected.count(answer) / len(expected) >= share - DEGENERATE_MARGIN:
            return None
    return (f"the float model predicts {answer} for {count} of {len(answers)} evaluation images: fidelity "
            "compares the compiled model with this one, so check the float model itself (weights trained? "
            "preprocessing right?) before trusting the bundle")
