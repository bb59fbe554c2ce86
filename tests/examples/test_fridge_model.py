"""The committed demo fridge model, measured the way a device runs it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent import postprocess
from agent.preprocess import preprocess
from compiler.description import load_description
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import ITEM_KINDS, stream

FRESH_SEED = 777_777  # never used by the training script (it renders seeds 1000.., 2000.., 3000..)


def test_model_file_is_small_float_onnx_opset_17() -> None:
    assert MODEL_FILE.stat().st_size <= 5 * 1024 * 1024
    model = onnx.load(str(MODEL_FILE))
    onnx.checker.check_model(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_description_matches_the_model() -> None:
    description = load_description(DESCRIPTION_FILE)
    assert description.labels == list(ITEM_KINDS)
    assert description.task.value == "multilabel"
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == description.input.name
    assert inp.shape[1:] == [3, description.preprocessing.height, description.preprocessing.width]
    assert session.get_outputs()[0].shape[-1] == len(description.labels)


def test_mean_f1_on_500_fresh_photos() -> None:
    description = load_description(DESCRIPTION_FILE)
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    post = postprocess.get(description.postprocessor.name)
    tp = np.zeros(8)
    fp = np.zeros(8)
    fn = np.zeros(8)
    for shelf in (s for s, _ in zip(stream(FRESH_SEED), range(500), strict=False)):
        x, placement = preprocess(shelf.image, description.preprocessing)
        outputs = session.run(None, {description.input.name: x})
        pred = post(outputs, description.labels, description.postprocessor.params, placement)
        predicted = np.array([label in pred.labels for label in description.labels])
        truth = shelf.labels > 0.5
        tp += predicted & truth
        fp += predicted & ~truth
        fn += ~predicted & truth
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    assert f1.mean() >= 0.90, dict(zip(description.labels, f1.round(3), strict=True))
    assert f1.min() >= 0.75


@pytest.mark.parametrize("batch", [1, 4])
def test_dynamic_batch(batch: int) -> None:
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": np.zeros((batch, 3, 128, 128), np.float32)})
    assert out.shape == (batch, 8)
    assert np.all((out >= 0) & (out <= 1))
