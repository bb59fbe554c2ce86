"""Measuring variants of one model side by side (``compile_quality``, ``generality``).

- ``measure``: size, fidelity and accuracy of a variant through the compiler's own ``Pipeline.measure``
  (the agent's preprocess, runtime and postprocess), on the pipeline's evaluation images;
- ``interleaved_latency``: every variant timed in rounds, float first, so a shared host's drift
  hits all alike; the ratio to float is taken per round (median and q25-q75);
- ``plain_ort``: plain onnxruntime ``quantize_static`` (its defaults, or per-channel), as an ML
  engineer would run it without coldchain;
- ``float_compute``: how many of a graph's Conv/Gemm/MatMul run in float (ONNX QDQ or QOperator,
  or TFLite): what a quantized variant really kept in float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.runtimes import open_runtime, time_runs
from compiler import onnxio
from compiler.passes.calibration import NpzReader, load_samples
from compiler.pipeline import Pipeline, Step, evaluation_runtime

Feed = Mapping[str, np.ndarray]
ONNX_COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ONNX_INT8_COMPUTE = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}


@dataclass
class Row:
    model: str
    variant: str
    size: int
    fidelity: float
    accuracy: float | None
    p50: float
    note: str = ""
    path: Path | None = None
    feed: Feed | None = None  # the variant's own input (a TFLite model's is NHWC int8); None: the shared one
    ratio: float = float("nan")  # latency / float's, median over rounds
    spread: tuple[float, float] = (float("nan"), float("nan"))  # q25, q75 of the per-round ratios
    extra: dict[str, Any] = field(default_factory=dict)


def interleaved_latency(rows: list[Row], feed: Feed, threads: int, rounds: int = 7, iterations: int = 40) -> None:
    """p50 of every variant, measured round-robin (all variants once per round, median over rounds),
    and each variant's ratio to the first row (the float model) taken within each round."""
    runtimes = [open_runtime(evaluation_runtime(r.path), r.path, threads) if r.path else None for r in rows]
    samples: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for i, runtime in enumerate(runtimes):
            if runtime is not None:
                times = time_runs(runtime, rows[i].feed or feed, warmup=5, iterations=iterations)
                samples[i].append(float(np.percentile(times, 50)))
    for row, values in zip(rows, samples, strict=True):
        row.p50 = float(np.median(values)) if values else float("nan")
        if values and samples[0]:
            ratios = np.array(values) / np.array(samples[0])
            row.ratio = float(np.median(ratios))
            row.spread = (float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)))
    for runtime in runtimes:
        if runtime is not None:
            runtime.close()


def measure(p: Pipeline, ref, name: str, variant: str, model: Path, float_acc, note: str = "") -> Row:  # type: ignore[no-untyped-def]
    step: Step
    step, _, io = p.measure(variant, model, {}, ref, float_acc)
    feeds, _ = p.evaluation.inputs(io.preprocessing, io.inputs[0].name)
    return Row(name, variant, step.stats.size_bytes, step.fidelity, step.accuracy, float("nan"), note, model,
               feeds[0])


def plain_ort(source: Path, calibration: Path, out: Path, per_channel: bool = False) -> Path:
    """onnxruntime's ``quantize_static`` with its defaults (QDQ, int8 activations and weights, MinMax),
    optionally per-channel: what an engineer gets without coldchain."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(source), str(out), NpzReader(load_samples(calibration, "baseline")), per_channel=per_channel)
    return out


def float_compute(model: Path) -> tuple[int, int]:
    """(float, all) Conv/Gemm/MatMul-like ops: in ONNX QDQ an op runs int8 when both its data and
    weight inputs come from DequantizeLinear; QLinear*/*Integer ops are int8; in TFLite an op runs
    float when its input tensor is float."""
    if model.suffix == ".tflite":
        from agent.runtimes.litert import LiteRTRuntime

        interpreter = LiteRTRuntime(model).interpreter
        dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
        ops = [op for op in interpreter._get_ops_details() if op["op_name"] in TFLITE_COMPUTE]
        return sum(dtypes.get(op["inputs"][0]) == np.float32 for op in ops), len(ops)
    graph = onnxio.load(model).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    compute = [n for n in graph.node if n.op_type in ONNX_COMPUTE | ONNX_INT8_COMPUTE]
    floats = [n for n in compute if n.op_type in ONNX_COMPUTE
              and not all(producer.get(x) == "DequantizeLinear" for x in n.input[:2])]
    return len(floats), len(compute)
