"""``benchmarks.variants.float_compute``: the generality table's "kept in float" column counts the
Conv/Gemm that really run in float, whatever a variant is labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import quantize_static

from benchmarks.variants import float_compute, plain_ort
from compiler.passes.calibration import NpzReader, load_samples
from examples.fridge import MODEL_FILE


def calibration(tmp_path: Path) -> Path:
    name = onnx.load(str(MODEL_FILE)).graph.input[0].name
    path = tmp_path / "calibration.npz"
    np.savez(path, **{name: np.random.default_rng(0).normal(size=(4, 3, 128, 128)).astype(np.float32)})
    return path


def test_float_compute_counts_what_int8_left_in_float(tmp_path: Path) -> None:
    graph = onnx.load(str(MODEL_FILE)).graph
    compute = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert float_compute(MODEL_FILE) == (len(compute), len(compute))
    samples = calibration(tmp_path)
    assert float_compute(plain_ort(MODEL_FILE, samples, tmp_path / "int8.onnx", per_channel=True)) == (0, len(compute))
    kept = tmp_path / "kept.onnx"
    quantize_static(str(MODEL_FILE), str(kept), NpzReader(load_samples(samples, "test")), per_channel=True,
                    nodes_to_exclude=compute[:3])
    assert float_compute(kept) == (3, len(compute))
