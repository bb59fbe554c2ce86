"""What a model costs in memory on the device, beside its file size.

- ``weights_bytes``: the model's in-memory size, the bytes of every initializer (and Constant)
  once loaded, as arrays (a gzip tarball or an external-data file says nothing about this);
  for .tflite, the bytes of the constant tensors.
- ``peak_bytes``: peak working memory of one inference on a real input. ONNX: measured by
  onnxruntime itself, the peak of its CPU arena's bytes in use during the run (its profiler
  records ``mem_in_use_peak`` per node) minus what was in use before the first node (weights
  that onnxruntime keeps in the arena are not working memory). .tflite: the largest sum of
  the intermediate tensors alive at once, walking the interpreter's ops in execution order.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from compiler import onnxio
from compiler.errors import CompilerError


@dataclass(frozen=True)
class Memory:
    weights_bytes: int
    peak_bytes: int


def onnx_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer and Constant value as loaded arrays."""
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    return int(sum(numpy_helper.to_array(t).nbytes for t in tensors))


def _ort_peak(model: Path, feed: Mapping[str, np.ndarray], threads: int) -> int:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            session.run(None, dict(feed))
            events = json.loads(Path(session.end_profiling()).read_text())
        except Exception as exc:  # onnxruntime's own error types
            raise CompilerError(f"cannot measure the memory of {model.name}: {type(exc).__name__}: {exc}") from exc
    nodes = [e["args"] for e in events if e.get("cat") == "Node" and "mem_in_use_peak" in e.get("args", {})]
    if not nodes:
        return 0
    before = int(nodes[0]["mem_bytes_in_use"]) - int(nodes[0]["mem_in_use_delta"])
    return max(int(n["mem_in_use_peak"]) for n in nodes) - before


def _tflite(model: Path) -> Memory:
    from agent.runtimes.litert import LiteRTRuntime

    interpreter = LiteRTRuntime(model).interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # execution order
    produced = {int(i) for op in ops for i in op["outputs"]}
    fed = {int(d["index"]) for d in interpreter.get_input_details()}

    def size(index: int) -> int:
        t = tensors[index]
        return int(np.prod(t["shape"])) * int(np.dtype(t["dtype"]).itemsize)

    used = {int(i) for op in ops for i in op["inputs"] if int(i) >= 0}
    weights = sum(size(i) for i in used - produced - fed)
    last: dict[int, int] = {}
    for step, op in enumerate(ops):
        for i in op["inputs"]:
            last[int(i)] = step
    outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    live: set[int] = set(fed)
    peak = 0
    for step, op in enumerate(ops):
        live |= {int(i) for i in op["outputs"]}
        peak = max(peak, sum(size(i) for i in live))
        live = {i for i in live if last.get(i, -1) > step or i in outputs}
    return Memory(weights, peak)


def measure(model: Path, feed: Mapping[str, np.ndarray], threads: int = 1) -> Memory:
    """Weights in memory and peak working memory of one inference of ``model`` on ``feed``."""
    if model.suffix == ".tflite":
        return _tflite(model)
    return Memory(onnx_weight_bytes(onnxio.load(model)), _ort_peak(model, feed, threads))


def describe(memory: Memory, reference: Memory | None = None) -> dict[str, Any]:
    """Figures for a summary row or a manifest: MiB, and ratios to ``reference`` (the float model)."""
    row: dict[str, Any] = {"weights_bytes": memory.weights_bytes, "peak_memory_bytes": memory.peak_bytes}
    if reference is not None and reference.weights_bytes:
        row["weights_vs_float"] = memory.weights_bytes / reference.weights_bytes
    if reference is not None and reference.peak_bytes:
        row["peak_vs_float"] = memory.peak_bytes / reference.peak_bytes
    return row
