from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from compiler.graph import stats
from compiler.passes import get_pass
from compiler.passes.channel_shuffle import fold_shuffles
from tests.compiler.graphs import shufflenet_units

X = np.random.default_rng(3).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)


def _outputs(path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"image": X})]


def _fold(tmp_path: Path, **config: object) -> tuple[Path, Path]:
    source = shufflenet_units(tmp_path / "units.onnx")
    cls = get_pass("fold.channel_shuffle")
    work = tmp_path / "fold"
    work.mkdir()
    return source, cls().run(source, cls.config(dict(config)), work)


def test_fold_is_exact_and_removes_every_shuffle(tmp_path: Path) -> None:
    source, folded = _fold(tmp_path)
    for before, after in zip(_outputs(source), _outputs(folded), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    ops = Counter(n.op_type for n in onnx.load(str(folded)).graph.node)
    assert ops["Transpose"] == 0 and ops["Reshape"] == 0


def test_fold_adds_no_parameters_and_no_convs(tmp_path: Path) -> None:
    """Every shuffled channel ends in a Conv that absorbs the order: the Convs that make the
    channels emit them in the order the Splits need, so no permutation Conv is added (they made
    NanoDet's int8 model 25 % bigger in memory)."""
    source, folded = _fold(tmp_path)
    before, after = stats(source), stats(folded)
    assert after.parameters == before.parameters
    count = Counter(n.op_type for n in onnx.load(str(folded)).graph.node)
    assert count["Conv"] == Counter(n.op_type for n in onnx.load(str(source)).graph.node)["Conv"]


def test_a_long_stage_folds_exactly_down_to_one_channel_blocks(tmp_path: Path) -> None:
    """Five units of 4 + 4 channels: a unit's channels reach Convs up to five units later, in
    blocks of one or two channels; every shuffle goes, nothing computes more, outputs are equal."""
    source = shufflenet_units(tmp_path / "long.onnx", units=5)
    model = onnx.load(str(source))
    assert fold_shuffles(model) == 5
    onnx.save(model, str(tmp_path / "folded.onnx"))
    for before, after in zip(_outputs(source), _outputs(tmp_path / "folded.onnx"), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert stats(tmp_path / "folded.onnx").parameters == stats(source).parameters
    assert not {"Transpose", "Reshape"} & {n.op_type for n in model.graph.node}


def test_excluded_shuffle_is_left_alone(tmp_path: Path) -> None:
    """Unit 0's passthrough half flows into unit 1's shuffle: when that one stays, unit 0's order
    cannot be absorbed by Convs either, so both stay (exact, and still no Conv added)."""
    source, folded = _fold(tmp_path, exclude_nodes=["u1_shuffle_t"])
    names = {n.name for n in onnx.load(str(folded)).graph.node}
    assert {"u1_shuffle_t", "u0_shuffle_t"} <= names
    for before, after in zip(_outputs(source), _outputs(folded), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_shared_weights_are_not_permuted_in_place(tmp_path: Path) -> None:
    path = shufflenet_units(tmp_path / "units.onnx")
    model = onnx.load(str(path))
    # a second reader of unit 0's second shuffle half shares u1_pw1's weight: permuting that
    # weight for one reader would corrupt the other, so the shuffles are left as they are
    model.graph.node.append(onnx.helper.make_node("Conv", ["u1_x2", "u1_pw1_w"], ["extra"], name="extra"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1, 4, 8, 8]))
    onnx.save(model, str(path))
    before = _outputs(path)
    weights = {i.name: onnx.numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    assert fold_shuffles(model) == 0
    onnx.save(model, str(tmp_path / "folded.onnx"))
    for a, b in zip(before, _outputs(tmp_path / "folded.onnx"), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    after = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(after["u1_pw1_w"], weights["u1_pw1_w"])


def test_int8_model_needs_fewer_layout_transposes(tmp_path: Path) -> None:
    """What the rewrite is for: onnxruntime's channels-last int8 graph keeps fewer Transposes."""
    source, folded = _fold(tmp_path)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "cal.npz", image=rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32))
    quantize = get_pass("quantize.static")

    def transposes(model: Path, name: str) -> int:
        work = tmp_path / name
        work.mkdir()
        q = quantize().run(model, quantize.config({"calibration": tmp_path / "cal.npz", "quantize_bias": False}), work)
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(work / "optimized.onnx")
        ort.InferenceSession(str(q), options, providers=["CPUExecutionProvider"])
        return sum(n.op_type == "Transpose" for n in onnx.load(str(work / "optimized.onnx")).graph.node)

    assert transposes(folded, "after") < transposes(source, "before")



def test_model_without_shuffles_is_returned_unchanged(tmp_path: Path) -> None:
    from tests.compiler.graphs import small_cnn

    source = small_cnn(tmp_path / "cnn.onnx")
    cls = get_pass("fold.channel_shuffle")
    assert cls().run(source, cls.config({}), tmp_path) == source
