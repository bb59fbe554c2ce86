from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

from compiler.description import load_description
from compiler.errors import UnsupportedOpsError
from compiler.evaluate import ImageSet
from compiler.pipeline import Pipeline
from compiler.target import load_target
from examples.fridge import DESCRIPTION_FILE
from tests.compiler.graphs import small_cnn


def _pipeline(target: str, tmp_path: Path) -> Pipeline:
    empty = ImageSet([], [])
    return Pipeline(load_description(DESCRIPTION_FILE), load_target(target), empty, empty, tmp_path)


def test_ops_the_runtime_cannot_run_are_named(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("TreeEnsembleClassifier", ["scores"], ["label", "probs"],
                                             domain="ai.onnx.ml", name="trees"))
    model.graph.node.append(helper.make_node("Gelu", ["scores"], ["g"], domain="com.microsoft", name="gelu"))
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpsError, match=r"tensorrt on jetson-orin-trt-int8 cannot run Gelu "
                                                  r"\(com\.microsoft\), TreeEnsembleClassifier \(ai\.onnx\.ml\)"):
        _pipeline("jetson-orin-trt-int8", tmp_path).check_ops(path)
    _pipeline("x86-64-avx512-ort", tmp_path).check_ops(path)  # onnxruntime runs both


def test_standard_ops_pass(tmp_path: Path) -> None:
    _pipeline("arm64-litert", tmp_path).check_ops(small_cnn(tmp_path / "m.onnx"))
