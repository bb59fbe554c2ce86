"""``optimize.graph``: float32 with onnxruntime's graph optimisations applied offline.

The model is loaded once with onnxruntime at the ``basic`` level (constant folding, redundant
node elimination, Conv/BatchNorm/Add/Mul fusions: standard ONNX ops only, so the result runs on
any onnxruntime build) and the optimised graph is saved. The last resort of a compile whose
quantized candidates all miss the budget: float fidelity, nothing of int8's size or speed.
"""

from __future__ import annotations

from pathlib import Path

from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig


class OptimizeGraphConfig(PassConfig):
    pass


class OptimizeGraph(Pass[OptimizeGraphConfig]):
    name = "optimize.graph"
    Config = OptimizeGraphConfig
    summary = "float32, onnxruntime basic graph optimisations applied offline (portable ops only)"
    exact = True

    def run(self, model: Path, config: OptimizeGraphConfig, workdir: Path) -> Path:
        import onnxruntime as ort

        out = workdir / "model.optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PassError(f"onnxruntime could not optimise the graph: {type(exc).__name__}: {exc}") from exc
        if not out.exists():
            raise PassError("onnxruntime wrote no optimised graph")
        return out
