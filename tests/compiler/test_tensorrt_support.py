"""Jetson bundles TensorRT 10 can parse, checked statically (TensorRT cannot be installed here):
every node against the ONNX operator support matrix and the explicit-quantization rules; the
optimization profile; no prebuilt engine in a bundle; and, only where ``tensorrt`` imports, the
engine's outputs against the onnxruntime golden I/O the bundle carries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from agent.errors import ModelLoadFailed
from agent.runtimes.tensorrt import ENGINE_CONFIG, profile_shapes
from coldchain.cli import app
from compiler.passes import get_pass
from compiler.tensorrt_support import check
from contract import signing
from contract.bundle import unpack
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from tests.compiler.graphs import calibration, small_cnn

runner = CliRunner()
JETSON = ("jetson-orin-trt-int8", "jetson-orin-trt-fp16")


def _prepare(tmp_path: Path, precision: str, model: Path | None = None) -> Path:
    cls = get_pass("tensorrt.prepare")
    work = tmp_path / precision
    work.mkdir()
    source = model or small_cnn(tmp_path / "m.onnx")
    return cls().run(source, cls.config({"precision": precision, "calibration": calibration(tmp_path / "cal.npz")}),
                     work)


def test_int8_dequantizes_only_int8_and_keeps_biases_float(tmp_path: Path) -> None:
    proto = onnx.load(str(_prepare(tmp_path, "int8")))
    inits = {i.name: i for i in proto.graph.initializer}
    made = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear":
            x = node.input[0]
            dtype = inits[x].data_type if x in inits else None
            assert dtype == TensorProto.INT8 or made[x].op_type == "QuantizeLinear", node.name
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert all(n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.FLOAT for n in convs)
    assert check(proto).problems == []


def test_the_checker_names_what_tensorrt_refuses(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    bias = numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias")
    scale = numpy_helper.from_array(np.float32(0.1), "scale")
    nodes = [helper.make_node("DequantizeLinear", ["bias", "scale"], ["b"], name="dq_bias"),
             helper.make_node("Add", ["x", "b"], ["y"], name="add"),
             helper.make_node("Unique", ["y"], ["u"], name="unique"),
             helper.make_node("NonZero", ["y"], ["nz"], name="nonzero"),
             helper.make_node("Gelu", ["y"], ["g"], domain="com.microsoft", name="gelu")]
    graph = helper.make_graph(nodes, "bad", [x], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                                  for n in ("u", "nz", "g")], [bias, scale])
    report = check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                            helper.make_opsetid("com.microsoft", 1)]))
    text = "\n".join(report.problems)
    assert "DequantizeLinear dq_bias: input bias is INT32" in text and "quantized bias" in text
    assert "Unique unique: not in TensorRT 10's ONNX operator support matrix" in text
    assert "domain com.microsoft" in text
    assert report.data_dependent == ["NonZero nonzero (nz)"]


def test_the_pass_refuses_what_tensorrt_cannot_parse_naming_it(tmp_path: Path) -> None:
    from compiler.errors import PassError

    path = small_cnn(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Unique", ["scores"], ["unique"], name="distinct"))
    model.graph.output.append(helper.make_tensor_value_info("unique", TensorProto.FLOAT, None))
    onnx.save(model, str(path))
    with pytest.raises(PassError, match=r"would refuse 1 node\(s\): Unique distinct: not in TensorRT 10's"):
        _prepare(tmp_path, "fp16", path)


def test_engine_config_profiles_a_dynamic_input_at_the_fed_shape(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "dyn.onnx")  # batch "N": dynamic
    out = _prepare(tmp_path, "fp16", model)
    config = json.loads((out.parent / "bundle_extras" / ENGINE_CONFIG).read_text())
    assert config["profile"]["image"] == {"min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [1, 3, 16, 16]}
    assert config["dynamic_inputs"] == ["image"]
    shapes = profile_shapes({"image": (-1, 3, 16, 16)}, config)
    assert shapes == {"image": ((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))}
    assert profile_shapes({"image": (1, 3, 16, 16)}, config) == {}  # static: TensorRT makes its own
    with pytest.raises(ModelLoadFailed, match="dynamic input other has no optimization profile"):
        profile_shapes({"other": (-1, 8)}, config)
    with pytest.raises(ModelLoadFailed, match=r"profile of image.*does not fit"):
        profile_shapes({"image": (-1, 3, 32, 32)}, config)


def test_a_bundle_never_carries_a_prebuilt_engine(tmp_path: Path, fridge_images: tuple[Path, Path],
                                                  keys: signing.KeyPairPaths) -> None:
    """An engine is specific to its GPU, TensorRT and JetPack: the device builds its own. A file
    the pass left beside the engine config (a check build) stays out of the bundle."""
    from compiler.bundle import write_bundle
    from compiler.description import load_description
    from compiler.evaluate import image_sets
    from compiler.pipeline import Pipeline
    from compiler.target import load_target
    from contract.manifest import ModelSource
    from contract.signing import load_private_key

    description = load_description(DESCRIPTION_FILE)
    cal, ev, _ = image_sets(fridge_images[0], fridge_images[1], 20, 0, description)
    target = load_target("jetson-orin-trt-fp16")
    result = Pipeline(description, target, cal, ev, tmp_path / "work").run(MODEL_FILE)
    (result.final.model.parent / "bundle_extras" / "model.engine").write_bytes(b"a serialized engine")
    source = ModelSource(name="fridge", version="1", source_uri="file:///fridge.onnx", sha256="1" * 64)
    bundle = write_bundle(result, source, target, cal, ev, load_private_key(keys.private), tmp_path / "out", 1)
    assert (bundle.directory / ENGINE_CONFIG).is_file()
    assert not (bundle.directory / "model.engine").exists()
    assert [f.path for f in bundle.manifest.files] == ["model.onnx", ENGINE_CONFIG, "golden.npz"]


@pytest.fixture(scope="module")
def jetson_bundles(tmp_path_factory: pytest.TempPathFactory, fridge_images: tuple[Path, Path],
                   keys: signing.KeyPairPaths) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("jetson")
    targets = [a for t in JETSON for a in ("-t", t)]
    result = runner.invoke(app, ["compile", str(MODEL_FILE), "--description", str(DESCRIPTION_FILE),
                                 "--calibration", str(fridge_images[0]), "--evaluation", str(fridge_images[1]),
                                 "--key", str(keys.private), "--out", str(out), *targets])
    assert result.exit_code == 0, result.output
    return {t: unpack(next(out.glob(f"*-{t}-*.tar.gz")), out / "unpacked" / t) for t in JETSON}


@pytest.mark.parametrize("target", JETSON)
def test_each_jetson_bundle_is_what_tensorrt_10_parses(jetson_bundles: dict[str, Path], target: str) -> None:
    directory = jetson_bundles[target]
    report = check(onnx.load(str(directory / "model.onnx")))
    assert report.problems == [] and report.data_dependent == []
    assert not list(directory.glob("*.engine")) and not list(directory.glob("*.plan"))
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["target"]["runtime"]["min_version"].startswith("10.")
    assert json.loads((directory / ENGINE_CONFIG).read_text())["profile"]["image"]["opt"] == [1, 3, 128, 128]


@pytest.mark.parametrize("target", JETSON)
def test_tensorrt_engine_matches_the_onnxruntime_golden_outputs(jetson_bundles: dict[str, Path],
                                                                 target: str) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (no NVIDIA GPU / index)")
    from agent.model import LoadedModel
    from agent.selftest import run_golden
    from contract.manifest import load_manifest

    directory = jetson_bundles[target]
    manifest = load_manifest((directory / "manifest.json").read_bytes())
    with LoadedModel.open(directory / "model.onnx", manifest.io, manifest.target.runtime.name, 1) as model:
        result = run_golden(model, manifest.golden, directory / manifest.golden.file)
    assert result.passed, f"max error {result.max_abs_error} > {result.tolerance}"


def test_nanodet_prepared_for_jetson_is_what_tensorrt_10_parses(shared_data: Path, tmp_path: Path) -> None:
    """The real detector (Resize, Split, Concat, LeakyRelu, Sigmoid, ...) through cleanup and
    tensorrt.prepare, as its Jetson bundles carry it; 8 calibration photos are enough to check the graph."""
    from compiler.description import load_description
    from compiler.evaluate import load_images

    description = load_description(Path(__file__).parents[2] / "examples" / "nanodet" / "model.yaml")
    images = load_images(shared_data / "grocery" / "val" / "Fruit", description.labels, description.task, "cal")
    feeds, _ = images.subset(range(8)).inputs(description.preprocessing, "input.1")
    np.savez(tmp_path / "cal.npz", **{"input.1": np.concatenate([f["input.1"] for f in feeds])})
    cleanup = get_pass("cleanup")
    (tmp_path / "clean").mkdir()
    clean = cleanup().run(shared_data / "nanodet" / "object_detection_nanodet_2022nov.onnx",
                          cleanup.config({"opset": 17}), tmp_path / "clean")
    prepare = get_pass("tensorrt.prepare")
    for precision in ("fp16", "int8"):
        (tmp_path / precision).mkdir()
        out = prepare().run(clean, prepare.config({"precision": precision, "calibration": tmp_path / "cal.npz"}),
                            tmp_path / precision)
        report = check(onnx.load(str(out)))
        assert report.problems == [] and report.data_dependent == [], precision
        config = json.loads((out.parent / "bundle_extras" / ENGINE_CONFIG).read_text())
        assert config["profile"]["input.1"]["opt"] == [1, 3, 416, 416]
