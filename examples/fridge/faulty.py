"""A deliberately faulty "v2" of the demo fridge model, for rollout demos and tests.

It is a realistic kind of fault: a broken classifier head (a bias export bug) that makes the
model see one item everywhere and nothing else. The graph is valid, compiles, passes its own
golden self-test and runs fast, so only watching the model's predictions in the field (the
rollout's prediction-drift gate) can catch it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def write_faulty_model(source: Path, destination: Path, label_index: int = 0, shift: float = 60.0) -> Path:
    """Copy ``source`` with the head's bias pushed up for ``label_index`` and down for the rest."""
    model = onnx.load(str(source))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    bias = next(i for i in model.graph.initializer if i.name == gemm.input[2])
    values = numpy_helper.to_array(bias).astype(np.float32).copy()
    values -= shift
    values[label_index] += 2 * shift
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(destination))
    return destination
