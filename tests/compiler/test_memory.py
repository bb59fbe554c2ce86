"""Memory figures per compile step: weights in memory and peak working memory of one inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.memory import measure, onnx_weight_bytes
from compiler.passes import get_pass
from tests.compiler.graphs import calibration, small_cnn


def _widening(path: Path, channels: int) -> Path:
    """image [1,3,64,64] -> 1x1 Conv to ``channels`` -> Relu -> 1x1 Conv back to 3."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (channels, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 1, (3, channels, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["out"])]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph(nodes, "wide", [image],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_peak_working_memory_follows_the_largest_intermediate(tmp_path: Path) -> None:
    feed = {"image": np.ones((1, 3, 64, 64), np.float32)}
    output = 3 * 64 * 64 * 4
    for channels in (8, 64):
        memory = measure(_widening(tmp_path / f"{channels}.onnx", channels), feed)
        intermediate = channels * 64 * 64 * 4  # one [1,channels,64,64] float tensor
        # at least the intermediate alive; at most three of its size (onnxruntime's blocked layout
        # copies beside it) and the output
        assert intermediate <= memory.peak_bytes <= 3 * intermediate + output, channels
        assert memory.weights_bytes == (channels * 3 * 2) * 4


def test_int8_weights_take_a_quarter_of_the_memory(tmp_path: Path) -> None:
    source = small_cnn(tmp_path / "cnn.onnx", batch=1)
    quantize = get_pass("quantize.static")
    work = tmp_path / "q"
    work.mkdir()
    int8 = quantize().run(source, quantize.config({"calibration": calibration(tmp_path / "cal.npz"),
                                                   "quantize_bias": False}), work)
    feed = {"image": np.ones((1, 3, 16, 16), np.float32)}
    before, after = measure(source, feed), measure(int8, feed)
    float_weights = onnx_weight_bytes(onnx.load(str(source)))
    assert before.weights_bytes == float_weights == 4 * sum(
        int(np.prod(i.dims)) for i in onnx.load(str(source)).graph.initializer)
    assert 0.25 <= after.weights_bytes / before.weights_bytes < 0.5  # int8 weights, float biases and scales
    assert before.peak_bytes > 0 and after.peak_bytes > 0


def test_tflite_memory_from_the_interpreter(shared_data: Path) -> None:
    model = shared_data / "mobilenet_tflite" / "mobilenet_v2_1.0_224_quant.tflite"
    memory = measure(model, {})
    # MobileNetV2 1.0: 3.5 M int8 weights (and int32 biases); the largest activations 112x112x96 uint8
    assert 3_300_000 <= memory.weights_bytes <= model.stat().st_size
    assert 112 * 112 * 96 <= memory.peak_bytes <= 4 * 112 * 112 * 96
