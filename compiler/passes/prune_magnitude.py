"""``prune.magnitude``: unstructured pruning, the smallest |w| of Conv/Gemm/MatMul weights set to zero.

The file stays dense (the same size uncompressed) but compresses, and runtimes with sparse
kernels can use it; the sparsity reached is recorded by the pipeline from the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from onnx import numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.graph import WEIGHT_OPS, initializers
from compiler.passes.base import Pass, PassConfig


class PruneMagnitudeConfig(PassConfig):
    sparsity: Annotated[float, Field(ge=0.0, le=0.95)] = 0.3
    scope: Literal["per_layer", "global"] = "per_layer"
    min_params: Annotated[int, Field(ge=0)] = 1024  # smaller weights are left alone


class PruneMagnitude(Pass[PruneMagnitudeConfig]):
    name = "prune.magnitude"
    Config = PruneMagnitudeConfig
    summary = "unstructured magnitude pruning (records sparsity)"

    def run(self, model: Path, config: PruneMagnitudeConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        inits = initializers(proto)
        names = sorted({n.input[1] for n in proto.graph.node
                        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits})
        weights = {n: numpy_helper.to_array(inits[n]) for n in names}
        weights = {n: w for n, w in weights.items() if w.size >= config.min_params and w.dtype.kind == "f"}
        if config.scope == "global" and weights:
            everything = np.concatenate([np.abs(w).ravel() for w in weights.values()])
            cut = float(np.quantile(everything, config.sparsity))
            thresholds = dict.fromkeys(weights, cut)
        else:
            thresholds = {n: float(np.quantile(np.abs(w), config.sparsity)) for n, w in weights.items()}
        for name, w in weights.items():
            pruned = np.where(np.abs(w) <= thresholds[name], 0, w).astype(w.dtype)
            inits[name].CopyFrom(numpy_helper.from_array(pruned, name))
        return onnxio.save(proto, workdir / "model.sparse.onnx")
