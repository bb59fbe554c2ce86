"""Identical initializers are stored once: tied weights that cleanup's BatchNorm folding or an
exporter copied, and the identical int8 tensors per-channel quantization makes of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.passes import get_pass
from compiler.passes.dedupe import dedupe_initializers
from tests.compiler.graphs import calibration, run, tied_convs

X = np.random.default_rng(7).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)
TIED = [16, 16, 3, 3]
A72_INT8 = {"format": "QDQ", "per_channel": True, "activation_type": "uint8", "weight_type": "int8",
            "calibration_method": "minmax", "quantize_bias": False, "share_concat_scales": True}


def _pass(name: str, model: Path, tmp_path: Path, **config: object) -> Path:
    cls = get_pass(name)
    work = tmp_path / name
    work.mkdir(parents=True)
    return cls().run(model, cls.config(dict(config)), work)


def _outputs(model: Path) -> np.ndarray:
    return np.concatenate([run(model, X[i : i + 1]) for i in range(len(X))])  # cleanup fixes the batch to 1


def _tied(model: Path) -> list[onnx.TensorProto]:
    return [i for i in onnx.load(str(model)).graph.initializer if list(i.dims) == TIED]


def test_cleanup_stores_copies_of_a_tied_weight_once_and_exactly(tmp_path: Path) -> None:
    source = tied_convs(tmp_path / "copies.onnx", batchnorm=False)
    assert len(_tied(source)) == 3
    out = _pass("cleanup", source, tmp_path, opset=17)
    (kept,) = _tied(out)
    readers = [n.name for n in onnx.load(str(out)).graph.node if kept.name in n.input]
    assert len(readers) == 3
    np.testing.assert_array_equal(_outputs(out), _outputs(source))
    assert out.stat().st_size < 0.5 * source.stat().st_size  # 3 x 9,216 bytes of weights -> 1 x


def test_quantized_copies_of_a_folded_tied_weight_are_stored_once(tmp_path: Path) -> None:
    """cleanup folds each application's BatchNorm: three float weights (they differ); per-channel
    int8 makes them one int8 tensor with three scales, stored once."""
    source = tied_convs(tmp_path / "tied.onnx")
    cleaned = _pass("cleanup", source, tmp_path, opset=17)
    assert len(_tied(cleaned)) == 3  # different in float: nothing to share yet
    quantized = _pass("quantize.static", cleaned, tmp_path, calibration=calibration(tmp_path / "cal.npz"),
                      **A72_INT8)
    (weight,) = _tied(quantized)
    assert weight.data_type == TensorProto.INT8
    proto = onnx.load(str(quantized))
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == weight.name]
    assert len(dequantize) == 3 and len({n.input[1] for n in dequantize}) == 3  # one scale per application
    float_out = _outputs(source)
    assert np.abs(_outputs(quantized) - float_out).max() < 0.1 * np.abs(float_out).max()


def test_tensorrt_int8_stores_the_tied_weight_once(tmp_path: Path) -> None:
    cleaned = _pass("cleanup", tied_convs(tmp_path / "tied.onnx"), tmp_path, opset=17)
    out = _pass("tensorrt.prepare", cleaned, tmp_path, precision="int8", calibration=calibration(tmp_path / "c.npz"))
    assert len(_tied(out)) == 1


def test_int8_weights_of_a_shared_weight_are_quantized_once(tmp_path: Path) -> None:
    cleaned = _pass("cleanup", tied_convs(tmp_path / "copies.onnx", batchnorm=False), tmp_path, opset=17)
    out = _pass("quantize.weights", cleaned, tmp_path)
    (weight,) = _tied(out)  # int8, no float copy left beside it
    assert weight.data_type == TensorProto.INT8
    reference = _outputs(cleaned)
    assert np.abs(_outputs(out) - reference).max() < 0.05 * np.abs(reference).max()


def test_dedupe_is_exact_and_leaves_inputs_outputs_and_other_types_alone(tmp_path: Path) -> None:
    proto = onnx.load(str(tied_convs(tmp_path / "copies.onnx", batchnorm=False)))
    found = dedupe_initializers(proto)
    assert (found.copies, found.bytes) == (2, 2 * 16 * 16 * 9 * 4)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp_path / "deduped.onnx"))
    np.testing.assert_array_equal(run(tmp_path / "deduped.onnx", X), run(tmp_path / "copies.onnx", X))

    pinned = onnx.load(str(tmp_path / "copies.onnx"))
    pinned.graph.input.append(helper.make_tensor_value_info("tied_copy1", TensorProto.FLOAT, TIED))
    assert dedupe_initializers(pinned).copies == 1  # copy1 can be fed: only copy2 goes

    values = np.arange(512, dtype=np.int8).reshape(2, 256)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["ya"]), helper.make_node("Identity", ["b"], ["yb"]),
         helper.make_node("Identity", ["c"], ["yc"])], "types", [],
        [helper.make_tensor_value_info(n, t, None) for n, t in (("ya", TensorProto.INT8), ("yb", TensorProto.UINT8),
                                                                 ("yc", TensorProto.INT8))],
        [numpy_helper.from_array(values, "a"), numpy_helper.from_array(values.view(np.uint8), "b"),
         numpy_helper.from_array(values.reshape(256, 2), "c")])
    assert dedupe_initializers(helper.make_model(graph)).copies == 0  # same bytes, another type or shape


def test_dedupe_renames_readers_in_subgraphs(tmp_path: Path) -> None:
    values = np.linspace(-1, 1, 512, dtype=np.float32)
    branch = {name: helper.make_graph([helper.make_node("Identity", [name], [f"y_{name}"])], name, [],
                                      [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [512])])
              for name in ("a", "b")}
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch["a"], else_branch=branch["b"])], "if",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512])],
        [numpy_helper.from_array(values, "a"), numpy_helper.from_array(values.copy(), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert dedupe_initializers(model).copies == 1
    onnx.checker.check_model(model)
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for cond in (True, False):
        np.testing.assert_array_equal(session.run(None, {"cond": np.array(cond)})[0], values)
