"""Models whose weights live in external data files (torch's default ``dynamo=True`` export writes
``model.onnx.data``; MLflow's ONNX flavor does the same): intake makes them self-contained, and
refuses data files that are missing or outside the model's folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from coldchain.cli import app
from compiler import intake
from compiler.errors import ModelLoadError
from contract import signing
from contract.bundle import unpack, verify_dir
from examples.fridge import DESCRIPTION_FILE

runner = CliRunner()


def _external(proto: onnx.ModelProto) -> list[str]:
    return [t.name for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]


def _torch_export(folder: Path) -> Path:
    """A tiny multi-label CNN with the fridge model's input and output, exported with torch's defaults."""
    torch = pytest.importorskip("torch")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Sigmoid()).eval()
    path = folder / "model.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 128, 128),), str(path), input_names=["image"], output_names=["scores"])
    return path


def test_torch_default_export_compiles(tmp_path: Path, fridge_images: tuple[Path, Path],
                                       keys: signing.KeyPairPaths) -> None:
    model = _torch_export(tmp_path / "exported")
    assert (model.parent / "model.onnx.data").exists()  # torch's default: weights beside the graph
    assert _external(onnx.load(str(model), load_external_data=False))
    out = tmp_path / "out"
    result = runner.invoke(app, ["compile", str(model), "--description", str(DESCRIPTION_FILE),
                                 "--calibration", str(fridge_images[0]), "--evaluation", str(fridge_images[1]),
                                 "--key", str(keys.private), "--out", str(out), "--sequence", "5",
                                 "-t", "jetson-orin-trt-fp16"])
    assert result.exit_code == 0, result.output
    (tarball,) = out.glob("*-jetson-orin-trt-fp16-5.tar.gz")
    bundle = unpack(tarball, tmp_path / "bundle")
    verify_dir(bundle, signing.TrustStore.from_paths([keys.public]))
    (shipped,) = bundle.rglob("*.onnx")
    assert not list(bundle.rglob("*.data"))
    assert not _external(onnx.load(str(shipped), load_external_data=False))


def test_resolved_model_is_self_contained_and_hashed_with_its_weights(tmp_path: Path) -> None:
    model = _torch_export(tmp_path / "exported")
    first = intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work1", None, 17)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(first.path, alone / "model.onnx")  # what the pipeline does: the .onnx file only
    loaded = onnx.load(str(alone / "model.onnx"))
    assert not _external(loaded)
    original = onnx.load(str(model))
    for got, want in zip(loaded.graph.initializer, original.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(want))
    # the identity covers the weights: other weights in the data file, another sha256
    data = model.parent / "model.onnx.data"
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
    second = intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work2", None, 17)
    assert second.info.sha256 != first.info.sha256


def _with_location(folder: Path, location: str, data: bytes | None) -> Path:
    """The fridge-shaped graph whose one initializer points at ``location``; ``data`` written there
    (relative to ``folder``) if given."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(8 * 3 * 3 * 3 * 4))):
        weight.external_data.add(key=key, value=value)
    if data is not None:
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        (folder / location).write_bytes(data)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Sigmoid", ["f"], ["scores"])],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 128, 128])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 8])], [weight])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 864)
    model = _with_location(tmp_path / "model", location, None)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work", None, 17)


def test_external_data_linked_to_a_file_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 864)
    model = _with_location(tmp_path / "model", "weights.bin", None)
    (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work", None, 17)


def test_missing_external_data_file_is_named(tmp_path: Path) -> None:
    model = _with_location(tmp_path / "model", "weights.bin", None)
    with pytest.raises(ModelLoadError, match=r"weights\.bin.*does not exist"):
        intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work", None, 17)


def test_external_data_shorter_than_its_tensor_is_refused(tmp_path: Path) -> None:
    model = _with_location(tmp_path / "model", "weights.bin", b"\0" * 100)
    with pytest.raises(ModelLoadError, match=r"weights\.bin"):
        intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work", None, 17)


def test_external_data_in_a_subfolder_is_read(tmp_path: Path) -> None:
    model = _with_location(tmp_path / "model", "weights/w.bin", np.full(216, 0.5, np.float32).tobytes())
    source = intake.resolve(str(model), DESCRIPTION_FILE, tmp_path / "work", None, 17)
    (weight,) = onnx.load(str(source.path), load_external_data=False).graph.initializer
    assert weight.data_location == TensorProto.DEFAULT
    value = numpy_helper.to_array(weight)
    assert value.shape == (8, 3, 3, 3) and float(value[0, 0, 0, 0]) == 0.5


def test_mlflow_model_with_external_data(tmp_path: Path) -> None:
    """MLflow's ONNX flavor saves weights as external data by default: the registry source too."""
    import mlflow

    model = _torch_export(tmp_path / "exported")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("ext", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.onnx.log_model(onnx.load(str(model)), name="model", registered_model_name="ext",
                              save_as_external_data=True)
    stored = list((tmp_path / "artifacts").rglob("*.onnx"))
    assert stored and any(_external(onnx.load(str(p), load_external_data=False)) for p in stored)
    source = intake.resolve("models:/ext/1", DESCRIPTION_FILE, tmp_path / "work", uri, 17)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(source.path, alone / "model.onnx")
    assert not _external(onnx.load(str(alone / "model.onnx")))
    assert source.info.version == "1"
