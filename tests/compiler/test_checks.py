"""Checks up front: the model description against the graph (a readable error before any
onnxruntime run), and a warning for a float model whose predictions are degenerate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from agent.postprocess import Detection, Prediction
from coldchain.cli import app
from compiler.checks import check_description, degenerate
from compiler.description import load_description, parse_description
from compiler.errors import DescriptionError
from compiler.evaluate import Run
from contract import signing
from contract.manifest import Task
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from tests.compiler.graphs import small_cnn

runner = CliRunner()


def _described(**changes: object) -> object:
    data = yaml.safe_load(DESCRIPTION_FILE.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data[section][field] = value
    return parse_description(data, "test")


def test_the_fridge_description_fits_its_graph() -> None:
    check_description(MODEL_FILE, load_description(DESCRIPTION_FILE))


@pytest.mark.parametrize(("changes", "message"), [
    ({"preprocessing__width": 224, "preprocessing__height": 224},
     r"gives \[1, 3, 224, 224\] .* graph's input 'image' is \[batch, 3, 128, 128\]: .*width 224 .* 128"),
    ({"input__layout": "NHWC", "preprocessing__layout": "NHWC"},
     r"\[1, 128, 128, 3\].*the graph's input looks NCHW"),
    ({"preprocessing__layout": "NHWC"}, r"input.layout is NCHW but preprocessing.layout is NHWC"),
    ({"preprocessing__dtype": "uint8"}, r"preprocessing.dtype uint8.*graph's input 'image' is float32"),
    ({"input__name": "images"}, r"names input 'images'; the graph's inputs are \['image'\]"),
])
def test_a_description_that_does_not_fit_the_graph_is_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DescriptionError, match=message):
        check_description(MODEL_FILE, _described(**changes))  # type: ignore[arg-type]


def test_a_graph_of_another_rank_is_named(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(small_cnn(tmp_path / "m.onnx")))
    del model.graph.input[0].type.tensor_type.shape.dim[0]
    onnx.save(model, str(tmp_path / "m3.onnx"))
    with pytest.raises(DescriptionError, match=r"rank 3.*expects 4"):
        check_description(tmp_path / "m3.onnx", _described(input__name="image"))  # type: ignore[arg-type]


def test_compile_refuses_a_mismatch_before_running_the_model(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                             keys: signing.KeyPairPaths) -> None:
    description = tmp_path / "model.yaml"
    description.write_text(DESCRIPTION_FILE.read_text().replace("width: 128", "width: 160"))
    result = runner.invoke(app, ["compile", str(MODEL_FILE), "--description", str(description), "-t",
                                 "x86-64-avx512-ort", "--calibration", str(fridge_images[0]), "--evaluation",
                                 str(fridge_images[1]), "--key", str(keys.private), "--out", str(tmp_path / "out")])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "width 160" in output and "[batch, 3, 128, 128]" in output
    assert "onnxruntime" not in output.lower() and "INVALID_ARGUMENT" not in output
    assert not list((tmp_path / "out").glob("*.tar.gz"))


def _scores(label: int, count: int = 4) -> np.ndarray:
    scores = np.zeros(count, np.float32)
    scores[label] = 0.9
    return scores


def test_one_class_for_most_images_is_a_warning() -> None:
    labels = ["a", "b", "c", "d"]
    one = [Prediction((Detection("b", 0.9),), _scores(1)) for _ in range(18)]
    other = [Prediction((Detection("a", 0.9),), _scores(0)) for _ in range(2)]
    warning = degenerate(Run([], one + other), Task.CLASSIFICATION, labels, None)
    assert warning is not None and "'b' for 18 of 20" in warning
    varied = [Prediction((Detection(labels[i % 4], 0.9),), _scores(i % 4)) for i in range(20)]
    assert degenerate(Run([], varied), Task.CLASSIFICATION, labels, None) is None
    # labels that are mostly 'b' too: the data is like that, no warning
    assert degenerate(Run([], one + other), Task.CLASSIFICATION, labels, np.array([1] * 17 + [0] * 3)) is None


def test_empty_detections_for_most_images_is_a_warning() -> None:
    empty = [Prediction((), np.zeros(2, np.float32)) for _ in range(9)]
    found = [Prediction((Detection("cup", 0.8, (0, 0, 1, 1)),), np.zeros(2, np.float32))]
    warning = degenerate(Run([], empty + found), Task.DETECTION, ["cup", "bowl"], None)
    assert warning is not None and "no detection for 9 of 10" in warning


def test_the_same_label_set_for_most_images_is_a_warning() -> None:
    same = [Prediction((Detection("milk", 0.9),), np.zeros(3, np.float32)) for _ in range(10)]
    warning = degenerate(Run([], same), Task.MULTILABEL, ["milk", "egg", "jam"], None)
    assert warning is not None and "{milk} for 10 of 10" in warning
