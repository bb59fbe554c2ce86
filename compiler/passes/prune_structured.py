"""``prune.structured``: remove whole Conv output channels and rewire their consumers.

A Conv (group 1) is prunable when its output reaches, through per-channel element-wise ops
(ReLU family, BatchNormalization), only consumers whose input channels can be sliced:
another group-1 Conv, or a global average pool -> flatten -> Gemm/MatMul head. For each such
Conv the ``ratio`` least important channels are removed: the Conv's filters and bias, the
BatchNormalization parameters, and the matching input channels of every consumer — so
parameters and FLOPs really fall.

Importance, with calibration data (default): the standard deviation of the channel's
activation times the L1 weight its consumers give it — a channel that barely varies carries
no information. Its mean is then folded into the consumers' biases (bias compensation), so
removing a near-constant channel costs almost nothing without any fine-tuning. Without
data: the L1 norm of the filter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.errors import PassError, first_line
from compiler.graph import initializers
from compiler.passes.base import Pass, PassConfig
from compiler.passes.channels import ChannelStats, Group, activation_stats, find_groups, write_input


class PruneStructuredConfig(PassConfig):
    ratio: Annotated[float, Field(ge=0.0, le=0.9)] = 0.2  # fraction of channels removed per prunable Conv
    min_channels: Annotated[int, Field(ge=1)] = 8
    multiple_of: Annotated[int, Field(ge=1, le=64)] = 4  # keep channel counts SIMD-friendly
    importance: Literal["activation", "l1"] = "activation"
    # uniform: every prunable Conv loses ``ratio`` of its channels; global: the ``ratio`` least
    # important channels of the whole model go, wherever they are (importance normalised per layer)
    allocation: Literal["uniform", "global"] = "uniform"
    bias_compensation: bool = True
    samples: Annotated[int, Field(ge=1, le=1024)] = 32
    exclude_nodes: list[str] = []
    calibration: Path | None = None  # filled by the pipeline


def _ensure_bias(model: onnx.ModelProto, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], size: int,
                 dtype: np.dtype) -> str:
    if len(node.input) > 2 and node.input[2]:
        return str(node.input[2])
    name = f"{node.name or node.output[0]}_pruning_bias"
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(size, dtype), name))
    inits[name] = model.graph.initializer[-1]
    while len(node.input) < 2:
        node.input.append("")
    node.input.append(name)
    return name


def _prune(model: onnx.ModelProto, group: Group, keep: np.ndarray, mean: np.ndarray | None,
           inits: dict[str, onnx.TensorProto]) -> None:
    w = numpy_helper.to_array(inits[group.conv.input[1]])
    drop = np.setdiff1d(np.arange(w.shape[0]), keep)
    write_input(model, inits, group.conv, 1, w[keep])
    if len(group.conv.input) > 2 and group.conv.input[2]:
        write_input(model, inits, group.conv, 2, numpy_helper.to_array(inits[group.conv.input[2]])[keep])
    for node in group.chain:
        if node.op_type in {"BatchNormalization", "Conv"}:  # BN, or a depthwise Conv
            for index in range(1, len(node.input)):
                if node.input[index]:
                    write_input(model, inits, node, index, numpy_helper.to_array(inits[node.input[index]])[keep])
        if node.op_type == "Conv":
            next(a for a in node.attribute if a.name == "group").i = len(keep)
    for node, axis in group.consumers:
        cw = numpy_helper.to_array(inits[node.input[1]])
        if mean is not None and drop.size:
            if node.op_type == "MatMul":
                raise PassError("bias compensation into a MatMul head is not supported; set bias_compensation: false")
            dropped = np.take(cw, drop, axis=axis)
            if node.op_type == "Conv":
                shift = dropped.reshape(*dropped.shape[:2], -1).sum(axis=-1) @ mean[drop]
            else:
                shift = np.tensordot(mean[drop], dropped, axes=([0], [axis]))
            bias = _ensure_bias(model, node, inits, shift.size, cw.dtype)
            write_input(model, inits, node, 2, numpy_helper.to_array(inits[bias]) + shift)  # Conv or Gemm
        write_input(model, inits, node, 1, np.take(cw, keep, axis=axis))


def _importance(group: Group, inits: dict[str, onnx.TensorProto], stats: dict[str, ChannelStats],
                config: PruneStructuredConfig) -> np.ndarray:
    w = numpy_helper.to_array(inits[group.conv.input[1]])
    channels = w.shape[0]
    found = stats.get(group.tensor)
    if config.importance == "activation" and found is not None:
        weight = sum(np.abs(numpy_helper.to_array(inits[n.input[1]])).swapaxes(0, a).reshape(channels, -1).sum(axis=1)
                     for n, a in group.consumers)
        return np.asarray(found.std * weight)
    return np.asarray(np.abs(w).reshape(channels, -1).sum(axis=1))


class PruneStructured(Pass[PruneStructuredConfig]):
    name = "prune.structured"
    Config = PruneStructuredConfig
    summary = "remove low-importance Conv output channels and rewire consumers"

    def run(self, model: Path, config: PruneStructuredConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        groups = find_groups(proto, set(config.exclude_nodes))
        inits = initializers(proto)
        data = config.importance == "activation" or config.bias_compensation
        stats = (activation_stats(model, groups, config.calibration, config.samples,
                                  "prune.structured (importance: activation)") if groups and data else {})
        scores = [_importance(g, inits, stats, config) for g in groups]
        if config.allocation == "global" and scores:
            normalised = np.concatenate([s / max(float(np.median(s)), 1e-12) for s in scores])
            cut = float(np.quantile(normalised, config.ratio)) if config.ratio > 0 else -np.inf
        for group, importance in zip(groups, scores, strict=True):
            channels = len(importance)
            if config.allocation == "global":
                wanted = int(np.count_nonzero(importance / max(float(np.median(importance)), 1e-12) > cut))
            else:
                wanted = round(channels * (1.0 - config.ratio))
            target = -(-wanted // config.multiple_of) * config.multiple_of
            n_keep = min(channels, max(config.min_channels, target))
            if n_keep >= channels:
                continue
            keep = np.sort(np.argsort(-importance, kind="stable")[:n_keep])
            mean = stats[group.tensor].mean if group.tensor in stats else None
            try:
                _prune(proto, group, keep, mean if config.bias_compensation else None, inits)
            except (ValueError, IndexError, KeyError) as exc:
                raise PassError(f"prune.structured cannot remove channels of Conv {group.conv.name or group.tensor!r}: "
                                f"{type(exc).__name__}: {first_line(exc)}") from exc
        del proto.graph.value_info[:]
        proto = onnx.shape_inference.infer_shapes(proto)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"structured pruning produced an invalid graph: {exc}") from exc
        return onnxio.save(proto, workdir / "model.pruned.onnx")
