"""The generality benchmark's model zoo: tiny versions of its networks, trained for one epoch on a
handful of grocery photos, export the graphs the table claims to cover; a compile that fails
becomes a row with the compiler's own reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
import yaml

from benchmarks.generality import Subject, compile_target, outcome_text, signing_key
from benchmarks.zoo import photos
from benchmarks.zoo.store import TrainConfig, Trained, cached

TINY = TrainConfig(epochs=1, batch=4, width=0.25, limit=8)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return tmp_path_factory.mktemp("zoo")


def tiny(net: str, work: Path) -> Trained:
    pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    from benchmarks.zoo.train import train

    return train(net, TINY, work, threads=1, log=lambda _: None)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def test_the_split_is_fixed_disjoint_and_covers_every_label(shared_data: Path) -> None:
    items, labels = photos.photos()
    train, held = photos.split(items)
    assert len(items) == 296 and len(labels) == 11
    assert {p.path for p in train}.isdisjoint({p.path for p in held})
    assert 0.25 < len(held) / len(items) < 0.45
    assert {p.label for p in held} == set(labels) == {p.label for p in train}
    assert photos.split(list(reversed(items)))[1] == list(reversed(held))  # by hash, not by order


def test_mobilenetv3_export_has_hardswish_and_squeeze_excitation(work: Path) -> None:
    trained = tiny("mnv3", work)
    graph = onnx.load(str(trained.model)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["HardSwish"] >= 4
    made_by = producers(graph)
    # squeeze-excitation: x * HardSigmoid(Conv(Relu(Conv(GlobalAveragePool(x)))))
    gates = [n for n in graph.node if n.op_type == "Mul"
             and any(made_by.get(x) is not None and made_by[x].op_type in ("HardSigmoid", "Sigmoid") for x in n.input)]
    assert len(gates) >= 4
    chain, node = [], made_by[next(x for x in gates[0].input if made_by[x].op_type in ("HardSigmoid", "Sigmoid"))]
    while node is not None and len(chain) < 6:
        chain.append(node.op_type)
        node = made_by.get(node.input[0])
    assert chain[:4] == [chain[0], "Conv", "Relu", "Conv"] and chain[4] in ("GlobalAveragePool", "ReduceMean")
    assert trained.metrics["held_out_photos"] > 80 and 0.0 <= trained.metrics["held_out_top1"] <= 1.0
    assert cached(work, "mnv3", TINY, photos.photos()[1]) is not None  # the second call trains nothing


def test_weight_tied_export_reads_one_initializer_from_several_convs(work: Path) -> None:
    trained = tiny("shared", work)
    model = onnx.load(str(trained.model))
    assert (trained.directory / "model.onnx.data").exists()  # torch's default: weights beside the graph
    weights = Counter(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    initializers = {i.name for i in model.graph.initializer}
    tied = {name: uses for name, uses in weights.items() if name in initializers and uses > 1}
    assert len(tied) == 3 and set(tied.values()) == {3}  # one 3x3 Conv per stage, applied three times
    description = yaml.safe_load(trained.description.read_text())
    assert description["input"]["name"] == model.graph.input[0].name
    assert description["labels"] == photos.photos()[1]


def test_a_failed_compile_is_a_row_with_the_compilers_reason(work: Path, tmp_path: Path) -> None:
    trained = tiny("mnv3", work)
    wrong = yaml.safe_load(trained.description.read_text())
    wrong["input"]["name"] = "pixels"  # not the graph's input
    description = tmp_path / "model.yaml"
    description.write_text(yaml.safe_dump(wrong))
    calibration, evaluation = photos.materialise(work)
    subject = Subject("mnv3", trained.model, description, calibration, evaluation, "")
    got = compile_target(subject, "arm64-cortex-a72-ort", signing_key(work), tmp_path / "out", timeout=120)
    assert got.outcome == "error" and got.model is None
    assert "pixels" in got.reason and "image" in got.reason, got.reason


def test_an_outcome_reads_as_the_best_attempt_against_the_budget_or_the_errors_ends() -> None:
    fallback = ("int8 over budget: keeping the first 32 nodes (input stem) in float: int8 stays over budget with up to "
                "32 nodes kept in float; best found: tensorrt.prepare with fidelity 0.9612 (budget 0.9900), accuracy "
                "0.6602, 745135 bytes; relax the budget (--min-fidelity) or change the target's passes")
    assert outcome_text("over budget", fallback) == "over budget: best 0.9612 < 0.9900 with up to 32 nodes in float"
    litert = ("pass convert.litert: convert.litert is over budget; best found: convert.litert with fidelity 0.8353 "
              "(budget 0.8500), 1263008 bytes; relax the budget (--min-fidelity) or change the target's passes")
    assert outcome_text("over budget", litert) == "over budget: best 0.8353 < 0.8500 (convert.litert)"
    long = "ModelLoadFailed: cannot load x.onnx: " + "detail " * 40 + "Unrecognized attribute: axis"
    short = outcome_text("error", long)
    assert short.startswith("error: ModelLoadFailed") and short.endswith("Unrecognized attribute: axis")
    assert len(short) < 170
    assert outcome_text("error", "timed out after 60 s") == "error: timed out after 60 s"


def test_a_cached_one_file_dynamo_export_is_compiled_as_torch_writes_it_today(tmp_path: Path) -> None:
    from tests.compiler.graphs import small_cnn

    folder = tmp_path / "zoo" / "shared-0"
    folder.mkdir(parents=True)
    small_cnn(folder / "model.onnx")
    one_file = Trained("shared", folder, {"exporter": "dynamo"})
    source = one_file.as_exported(tmp_path)
    assert source != one_file.model and (source.parent / "model.onnx.data").stat().st_size > 1000
    assert not list(folder.glob("*.data"))  # the cache is left as it is
    same = [onnx.numpy_helper.to_array(i).tobytes() for i in onnx.load(str(source)).graph.initializer]
    assert same == [onnx.numpy_helper.to_array(i).tobytes() for i in onnx.load(str(one_file.model)).graph.initializer]
    assert Trained("resnet", folder, {"exporter": "torchscript"}).as_exported(tmp_path) == one_file.model
