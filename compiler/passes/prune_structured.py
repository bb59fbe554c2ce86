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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.errors import PassError
from compiler.graph import initializers
from compiler.passes.base import Pass, PassConfig
from compiler.passes.calibration import iterate, load_samples

ELEMENTWISE = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Identity",
               "Dropout", "Tanh", "Softplus", "Mish", "Gelu"}


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


@dataclass
class Group:
    """One prunable Conv with the nodes its channels flow through and into."""

    conv: onnx.NodeProto
    chain: list[onnx.NodeProto] = field(default_factory=list)  # element-wise / BN nodes after it
    tensor: str = ""  # the tensor the consumers read
    consumers: list[tuple[onnx.NodeProto, int]] = field(default_factory=list)  # (Conv or Gemm/MatMul, in-axis)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _head(node: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
          ) -> tuple[onnx.NodeProto, int] | None:
    """GlobalAveragePool -> Flatten/Reshape -> Gemm/MatMul: the head weight and its input-channel axis."""
    nxt = users.get(node.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type not in ("Flatten", "Reshape"):
        return None
    fc = users.get(nxt[0].output[0], [])
    if len(fc) != 1 or fc[0].input[0] != nxt[0].output[0] or fc[0].input[1] not in inits:
        return None
    if fc[0].op_type == "Gemm":
        return fc[0], 1 if _attr(fc[0], "transB", 0) else 0
    return (fc[0], 0) if fc[0].op_type == "MatMul" else None


def _follow(conv: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
            outputs: set[str]) -> tuple[list[onnx.NodeProto], str] | None:
    """The per-channel chain after a Conv and the tensor at its end, or None if it leaks elsewhere."""
    chain: list[onnx.NodeProto] = []
    tensor = conv.output[0]
    while True:
        nxt = users.get(tensor, [])
        if tensor in outputs or not nxt:
            return None
        if len(nxt) != 1 or nxt[0].op_type not in ELEMENTWISE | {"BatchNormalization"}:
            return chain, tensor
        if nxt[0].op_type == "BatchNormalization" and not all(i in inits for i in nxt[0].input[1:]):
            return None
        chain.append(nxt[0])
        tensor = nxt[0].output[0]


def _sliceable(tensor: str, users: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
               uses: dict[str, int]) -> list[tuple[onnx.NodeProto, int]] | None:
    """Consumers of ``tensor`` whose input channels can be sliced, or None if any cannot."""
    found = []
    for user in users[tensor]:
        if (user.op_type == "Conv" and _attr(user, "group", 1) == 1 and user.input[0] == tensor
                and user.input[1] in inits and uses[user.input[1]] == 1):
            found.append((user, 1))
        elif user.op_type == "GlobalAveragePool" and (head := _head(user, users, inits)) is not None:
            found.append(head)
        else:
            return None
    return found


def find_groups(model: onnx.ModelProto, exclude: set[str]) -> list[Group]:
    inits = initializers(model)
    users = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    groups = []
    for conv in model.graph.node:
        if (conv.op_type != "Conv" or conv.name in exclude or _attr(conv, "group", 1) != 1
                or conv.input[1] not in inits or uses[conv.input[1]] != 1):
            continue
        followed = _follow(conv, users, inits, outputs)
        consumers = followed and _sliceable(followed[1], users, inits, uses)
        if followed and consumers:
            groups.append(Group(conv, followed[0], followed[1], consumers))
    return groups


def _activation_stats(model_path: Path, groups: list[Group], config: PruneStructuredConfig,
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = load_samples(config.calibration, "prune.structured (importance: activation)")
    model = onnxio.load(model_path)
    present = {o.name for o in model.graph.output}
    for g in groups:
        if g.tensor not in present:
            model.graph.output.append(helper.make_empty_tensor_value_info(g.tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [g.tensor for g in groups]
    sums: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, sample in enumerate(iterate(arrays)):
        if i >= config.samples:
            break
        for name, value in zip(names, session.run(names, sample), strict=True):
            sums[name].append(np.moveaxis(value, 1, 0).reshape(value.shape[1], -1))
    stats = {}
    for name, parts in sums.items():
        flat = np.concatenate(parts, axis=1)
        stats[name] = (flat.mean(axis=1), flat.std(axis=1))
    return stats


def _set(inits: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    inits[name].CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(inits[name]).dtype), name))


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
    _set(inits, group.conv.input[1], w[keep])
    if len(group.conv.input) > 2 and group.conv.input[2]:
        _set(inits, group.conv.input[2], numpy_helper.to_array(inits[group.conv.input[2]])[keep])
    for node in group.chain:
        if node.op_type == "BatchNormalization":
            for name in node.input[1:]:
                _set(inits, name, numpy_helper.to_array(inits[name])[keep])
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
            _set(inits, bias, numpy_helper.to_array(inits[bias]) + shift)
        _set(inits, node.input[1], np.take(cw, keep, axis=axis))


def _importance(group: Group, inits: dict[str, onnx.TensorProto], stats: dict[str, tuple[np.ndarray, np.ndarray]],
                config: PruneStructuredConfig) -> np.ndarray:
    w = numpy_helper.to_array(inits[group.conv.input[1]])
    channels = w.shape[0]
    std = stats.get(group.tensor, (None, None))[1]
    if config.importance == "activation" and std is not None:
        weight = sum(np.abs(numpy_helper.to_array(inits[n.input[1]])).swapaxes(0, a).reshape(channels, -1).sum(axis=1)
                     for n, a in group.consumers)
        return np.asarray(std * weight)
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
        stats = _activation_stats(model, groups, config) if groups and data else {}
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
            mean = stats.get(group.tensor, (None, None))[0]
            _prune(proto, group, keep, mean if config.bias_compensation else None, inits)
        del proto.graph.value_info[:]
        proto = onnx.shape_inference.infer_shapes(proto)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"structured pruning produced an invalid graph: {exc}") from exc
        return onnxio.save(proto, workdir / "model.pruned.onnx")
