from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.errors import PassError
from compiler.graph import stats
from compiler.passes import PASSES, get_pass
from tests.compiler.graphs import calibration, run, shared_params_cnn, small_cnn

X = np.random.default_rng(5).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)


def _run_pass(name: str, model: Path, tmp_path: Path, **config: object) -> Path:
    cls = get_pass(name)
    work = tmp_path / name
    work.mkdir(parents=True)
    return cls().run(model, cls.config(dict(config)), work)


def test_registry_and_typed_frozen_configs() -> None:
    assert {"cleanup", "equalize", "prune.structured", "prune.magnitude", "quantize.static", "quantize.dynamic",
            "fp16", "convert.litert", "tensorrt.prepare"} <= set(PASSES)
    config = get_pass("quantize.static").config({"per_channel": False})
    with pytest.raises(Exception, match="frozen"):
        config.per_channel = True  # type: ignore[misc]
    with pytest.raises(PassError, match="calibration_methd"):
        get_pass("quantize.static").config({"calibration_methd": "minmax"})
    with pytest.raises(PassError, match=r"unknown pass 'quantize\.magic'"):
        get_pass("quantize.magic")


def test_cleanup_fixes_real_world_quirks(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "old.onnx", opset=11, initializers_as_inputs=True)
    out = _run_pass("cleanup", model, tmp_path, opset=17)
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert next(o.version for o in proto.opset_import if o.domain == "") == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = X[:1]
    assert np.allclose(run(out, x), run(model, x), atol=1e-5)


def test_quantize_static_qdq_per_channel(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("quantize.static", model, tmp_path, calibration=calibration(tmp_path / "cal.npz"))
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w1 = next(v for k, v in inits.items() if k.startswith("w1") and v.dtype == np.int8 and v.ndim == 4)
    assert w1.shape == (8, 3, 3, 3)
    scales = next(v for k, v in inits.items() if k.startswith("w1") and k.endswith("scale"))
    assert scales.shape == (8,)  # per channel
    assert np.abs(run(out, X) - run(model, X)).max() < 0.05


def test_quantize_static_needs_opset_13_for_per_channel(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx", opset=11)
    with pytest.raises(PassError, match="opset >= 13"):
        _run_pass("quantize.static", model, tmp_path, calibration=calibration(tmp_path / "cal.npz"))


def test_quantize_static_excluded_nodes_stay_float(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("quantize.static", model, tmp_path, calibration=calibration(tmp_path / "cal.npz"),
                    exclude_nodes=["conv1"])
    inits = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    assert inits["w1"].data_type == onnx.TensorProto.FLOAT


def test_structured_pruning_removes_channels_and_compensates(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx", constant_channels=2)
    cal = calibration(tmp_path / "cal.npz")
    out = _run_pass("prune.structured", model, tmp_path, ratio=0.25, min_channels=1, multiple_of=1, calibration=cal,
                    exclude_nodes=["conv2"])
    before, after = stats(model), stats(out)
    assert after.parameters == before.parameters - 2 * (27 + 1) - 2 * 72  # conv1 filters+biases, conv2 inputs
    assert after.flops < before.flops
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    assert inits["w1"].shape[0] == 6 and inits["w2"].shape[1] == 6
    # the two pruned channels were constant: bias compensation makes the removal exact
    assert np.allclose(run(out, X), run(model, X), atol=1e-5)
    both = _run_pass("prune.structured", model, tmp_path / "both", ratio=0.25, min_channels=1, multiple_of=1,
                     calibration=cal)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(both)).graph.initializer}
    assert inits["w2"].shape[0] == 6 and inits["wf"].shape == (4, 6)  # the Gemm head is rewired too


@pytest.mark.parametrize("name", ["prune.structured", "equalize"])
def test_shared_initializers_are_copied_on_write(tmp_path: Path, name: str) -> None:
    """The torch exporter lets several Convs read one de-duplicated bias (and BatchNorms one set of
    parameters): changing it for one node must not change it for the others. The pass must give
    exactly what it gives on the same model with private copies."""
    cal = calibration(tmp_path / "cal.npz")
    config: dict[str, object] = {"calibration": cal}
    if name == "prune.structured":
        config |= {"ratio": 0.25, "min_channels": 1, "multiple_of": 1}
    shared = _run_pass(name, shared_params_cnn(tmp_path / "shared.onnx"), tmp_path / "s", **config)
    private = _run_pass(name, shared_params_cnn(tmp_path / "private.onnx", share=False), tmp_path / "p", **config)
    assert np.allclose(run(shared, X), run(private, X), atol=1e-5)
    assert stats(shared).parameters <= stats(private).parameters  # only what is written is copied
    if name == "prune.structured":
        assert stats(shared).parameters < stats(tmp_path / "private.onnx").parameters


def test_structured_pruning_without_compensation_changes_outputs(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx", constant_channels=2)
    out = _run_pass("prune.structured", model, tmp_path, ratio=0.25, min_channels=1, multiple_of=1,
                    importance="l1", bias_compensation=False)
    assert not np.allclose(run(out, X), run(model, X), atol=1e-3)


def test_equalize_is_exact_in_float(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("equalize", model, tmp_path, calibration=calibration(tmp_path / "cal.npz"))
    w_before = numpy_helper.to_array(next(i for i in onnx.load(str(model)).graph.initializer if i.name == "w1"))
    w_after = numpy_helper.to_array(next(i for i in onnx.load(str(out)).graph.initializer if i.name == "w1"))
    assert not np.allclose(w_before, w_after)
    assert np.allclose(run(out, X), run(model, X), atol=1e-4)


def test_magnitude_pruning_records_sparsity(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("prune.magnitude", model, tmp_path, sparsity=0.5, min_params=0)
    assert 0.45 <= stats(out).sparsity <= 0.55
    assert stats(model).sparsity == 0.0


def test_fp16_keeps_float32_io(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("fp16", model, tmp_path)
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert np.abs(run(out, X) - run(model, X)).max() < 1e-2


def test_dynamic_quantization_of_gemm(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("quantize.dynamic", model, tmp_path, per_channel=False)
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in onnx.load(str(out)).graph.node)
    assert np.abs(run(out, X) - run(model, X)).max() < 0.05


def test_tensorrt_int8_is_symmetric_explicit_qdq(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    out = _run_pass("tensorrt.prepare", model, tmp_path, precision="int8",
                    calibration=calibration(tmp_path / "cal.npz"))
    proto = onnx.load(str(out))
    zero_points = [numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: every zero point is 0
    assert all(z.dtype == np.int8 for z in zero_points)  # int8 tensors only: biases stay float
    config = json.loads((out.parent / "bundle_extras" / "engine_config.json").read_text())
    assert config["int8"] and config["explicit_quantization"]
    assert config["profile"]["image"]["opt"] == [1, 3, 16, 16]


def test_tensorrt_engine_build_needs_tensorrt(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (no NVIDIA GPU / index)")
    model = small_cnn(tmp_path / "m.onnx", batch=1)
    out = _run_pass("tensorrt.prepare", model, tmp_path, precision="fp16", build_engine=True)
    assert (out.parent / "engine-check" / "model.engine").stat().st_size > 0
    assert not list((out.parent / "bundle_extras").glob("*.engine"))  # never bundled


def test_tensorrt_engine_build_reports_missing_tensorrt(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        model = small_cnn(tmp_path / "m.onnx", batch=1)
        with pytest.raises(PassError, match="needs the tensorrt Python package"):
            _run_pass("tensorrt.prepare", model, tmp_path, precision="fp16", build_engine=True)
    else:
        pytest.skip("tensorrt is installed: the build itself is tested instead")


def test_litert_conversion_without_onnx2tf_says_what_to_do(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    with pytest.raises(PassError, match=r"setup-onnx2tf\.sh"):
        _run_pass("convert.litert", model, tmp_path, venv=tmp_path / "nowhere",
                  calibration=calibration(tmp_path / "cal.npz"))


def test_bias_correction_keeps_float_biases_and_accuracy(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    cal = calibration(tmp_path / "cal.npz", count=32)
    out = _run_pass("quantize.static", model, tmp_path, calibration=cal, bias_correction=True, correction_samples=16)
    inits = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    assert inits["b1"].data_type == onnx.TensorProto.FLOAT
    plain = _run_pass("quantize.static", model, tmp_path / "plain", calibration=cal)
    x = np.random.default_rng(9).normal(0, 1, (64, 3, 16, 16)).astype(np.float32)
    reference = np.concatenate([run(model, x[i : i + 1]) for i in range(64)])
    corrected = np.abs(np.concatenate([run(out, x[i : i + 1]) for i in range(64)]) - reference).mean()
    uncorrected = np.abs(np.concatenate([run(plain, x[i : i + 1]) for i in range(64)]) - reference).mean()
    # Conv -> Relu is folded by the quantizer: the correction must compare pre-activation tensors
    assert corrected <= 1.2 * uncorrected + 1e-4


def test_cleanup_reads_external_data(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    external = tmp_path / "ext" / "m.onnx"
    external.parent.mkdir()
    onnx.save(proto, str(external), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (external.parent / "weights.bin").stat().st_size > 3000
    out = _run_pass("cleanup", external, tmp_path, opset=17)
    assert np.allclose(run(out, X[:1]), run(model, X[:1]), atol=1e-5)


def test_fold_normalize_takes_raw_pixels_with_bit_identical_outputs(tmp_path: Path) -> None:
    """Issue 14: the model takes the resized uint8 planes; Cast, Sub(mean), Mul(1/std) inside it give
    exactly the agent's normalised input, and the model file says what it now takes."""
    from agent.preprocess import preprocess
    from compiler.description import InputDescription, ModelDescription
    from compiler.iospec import io_for
    from contract.manifest import Postprocessor, Preprocessing, Task

    pre = Preprocessing(resize="resize", width=16, height=16, color="RGB", mean=[103.53, 116.28, 123.675],
                        std=[57.375, 57.12, 58.395])
    model = small_cnn(tmp_path / "float.onnx", batch=1)
    folded = _run_pass("fold.normalize", model, tmp_path, preprocessing=pre, input="image")
    assert folded != model
    frame = np.random.default_rng(2).integers(0, 256, (40, 30, 3), np.uint8)
    x, _ = preprocess(frame, pre)
    description = ModelDescription.model_validate({
        "schema": "coldchain.model-description/v1", "name": "cnn", "task": Task.MULTILABEL,
        "input": InputDescription(name="image"), "preprocessing": pre, "labels": ["a", "b", "c", "d"],
        "postprocessor": Postprocessor(name="multilabel")})
    io = io_for(folded, description)
    assert io.inputs[0].dtype == "uint8" and io.inputs[0].shape == [1, 3, 16, 16]
    assert (io.preprocessing.dtype, io.preprocessing.mean, io.preprocessing.std) == ("uint8", [0.0] * 3, [1.0] * 3)
    assert (io.preprocessing.color, io.preprocessing.width) == ("RGB", 16)
    raw, _ = preprocess(frame, io.preprocessing)
    assert raw.dtype == np.uint8 and raw.shape == (1, 3, 16, 16)
    assert np.array_equal(run(folded, raw), run(model, x))  # bit for bit
    assert io_for(model, description).preprocessing == pre  # an unfolded model keeps the description's
    # nothing to fold: a uint8 description, or float pixels without normalisation
    raw_pre = pre.model_copy(update={"dtype": "uint8", "mean": [0.0] * 3, "std": [1.0] * 3})
    assert _run_pass("fold.normalize", model, tmp_path / "a", preprocessing=raw_pre, input="image") == model
    plain = pre.model_copy(update={"mean": [0.0] * 3, "std": [1.0] * 3})
    assert _run_pass("fold.normalize", model, tmp_path / "b", preprocessing=plain, input="image",
                     input_dtype="float32") == model
    with pytest.raises(PassError, match="no input 'pixels'"):
        _run_pass("fold.normalize", model, tmp_path / "c", preprocessing=pre, input="pixels")
