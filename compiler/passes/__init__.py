"""The pass registry: every optimisation the compiler can apply, by name."""

from __future__ import annotations

from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.channel_shuffle import ChannelShuffle
from compiler.passes.cleanup import Cleanup
from compiler.passes.equalize import Equalize
from compiler.passes.fold_normalize import FoldNormalize
from compiler.passes.fp16 import Float16
from compiler.passes.litert import ConvertLiteRT
from compiler.passes.optimize_graph import OptimizeGraph
from compiler.passes.prune_magnitude import PruneMagnitude
from compiler.passes.prune_structured import PruneStructured
from compiler.passes.quantize_dynamic import QuantizeDynamic
from compiler.passes.quantize_static import QuantizeStatic
from compiler.passes.quantize_weights import QuantizeWeights
from compiler.passes.tensorrt import TensorRTPrepare

PASSES: dict[str, type[Pass[PassConfig]]] = {
    p.name: p  # type: ignore[misc]
    for p in (Cleanup, ChannelShuffle, Equalize, PruneStructured, PruneMagnitude, QuantizeStatic, QuantizeDynamic,
              QuantizeWeights, Float16, OptimizeGraph, ConvertLiteRT, TensorRTPrepare, FoldNormalize)
}


def get_pass(name: str) -> type[Pass[PassConfig]]:
    try:
        return PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}; known passes: {', '.join(sorted(PASSES))}") from None


__all__ = ["PASSES", "Pass", "PassConfig", "get_pass"]
