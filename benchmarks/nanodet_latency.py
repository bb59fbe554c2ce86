"""Where NanoDet's int8 time goes on this host: paired latency ratios and the transpose cost.

    .venv/bin/python -m benchmarks.nanodet_latency [--rounds 41]

1. Variants against the source float file, measured in pairs (each round times every
   variant back to back; the ratio is taken per round, so a shared host's drift cancels),
   at 2 threads and 1: int8 with the first 8 nodes in float as the a72 bundle keeps them,
   without and with shared Concat ranges (the a72 bundle), and with ``fold.channel_shuffle``
   too; each with its fidelity (mAP@0.5 against the float model on 196 grocery photos).
   "fastest vs fastest" divides the lowest round p50s: the least disturbed speed of each.
2. onnxruntime's uint8 NCHW->NHWC Transpose, alone, at 1 and 2 threads, by channel count:
   the layout transposes its channels-last int8 graph inserts around every channel shuffle.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from agent.runtimes import open_runtime, time_runs
from compiler.description import load_description
from compiler.evaluate import image_sets
from compiler.passes import get_pass
from compiler.pipeline import Pipeline
from compiler.target import load_target

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "nanodet" / "object_detection_nanodet_2022nov.onnx"
console = Console(width=140)


def variants(work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    desc = load_description(ROOT / "examples" / "nanodet" / "model.yaml")
    calibration, evaluation, _ = image_sets(SOURCE.parents[1] / "grocery" / "val", None, 100, 0, desc)
    target = load_target("arm64-cortex-a72-ort")
    pipeline = Pipeline(desc, target, calibration, evaluation, work)
    (work / "float").mkdir()
    shutil.copy(SOURCE, work / "float" / "model.onnx")
    clean, _ = pipeline.apply_pass(target.passes[0], SOURCE, {}, "clean")
    folded = get_pass("fold.channel_shuffle")().run(clean, get_pass("fold.channel_shuffle").config({}),
                                                    _mkdir(work / "fold"))
    quantize = target.passes[-1]
    stem = [n.name for n in onnx.load(str(clean)).graph.node][:8]  # what the budget fallback keeps in float
    models = {
        "float32 source": SOURCE,
        "int8, own Concat ranges": pipeline.apply_pass(
            quantize, clean, {"exclude_nodes": stem, "share_concat_scales": False}, "int8-own")[0],
        "int8, shared Concat ranges": pipeline.apply_pass(
            quantize, clean, {"exclude_nodes": stem, "share_concat_scales": True}, "int8-shared")[0],
        "int8, shared ranges + fold.channel_shuffle (a72 bundle)": pipeline.apply_pass(
            quantize, folded, {"exclude_nodes": stem, "share_concat_scales": True}, "int8-fold")[0],
    }
    _, reference, _ = pipeline.measure("float", SOURCE, {}, None, None)
    fidelity = {name: pipeline.measure(name, path, {}, reference, None)[0].fidelity for name, path in models.items()}
    return models, fidelity


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def paired(models: dict[str, Path], fidelity: dict[str, float], rounds: int) -> Table:
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 416, 416)).astype(np.float32)
    table = Table(title=f"NanoDet latency, paired over {rounds} rounds")
    for column in ("variant", "fidelity", "threads", "p50 ms", "vs float (same threads)", "q25-q75",
                   "fastest vs fastest"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for threads in (2, 1):
        runtimes = {name: open_runtime("onnxruntime", path, threads) for name, path in models.items()}
        feed = {next(iter(runtimes.values())).input_names[0]: x}
        ms = np.array([[np.percentile(time_runs(r, feed, 3, 20), 50) for r in runtimes.values()]
                       for _ in range(rounds)])
        for i, name in enumerate(runtimes):
            ratio = ms[:, i] / ms[:, 0]
            table.add_row(name, f"{fidelity[name]:.4f}", str(threads), f"{np.median(ms[:, i]):.2f}",
                          f"{np.median(ratio):.3f}x",
                          f"{np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f}",
                          f"{ms[:, i].min() / ms[:, 0].min():.3f}x")
    return table


def transposes(work: Path) -> Table:
    table = Table(title="uint8 Transpose NCHW->NHWC [1,C,52,52], onnxruntime alone")
    for column in ("channels", "1 thread us", "2 threads us"):
        table.add_column(column, justify="right")
    for channels in (58, 64, 116, 128, 232, 256):
        shape = [1, channels, 52, 52]
        graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], "t",
                                  [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
        model = work / f"transpose-{channels}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
        feed = {"x": np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)}
        cells = [f"{np.percentile(time_runs(open_runtime('onnxruntime', model, t), feed, 3, 200), 50) * 1000:.0f}"
                 for t in (1, 2)]
        table.add_row(str(channels), *cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models, fidelity = variants(Path(tmp))
        console.print(paired(models, fidelity, args.rounds))
        console.print(transposes(Path(tmp)))


if __name__ == "__main__":
    main()
