"""Channel groups: a Conv whose output channels flow, through per-channel ops only, into
consumers whose input channels can be sliced or scaled (group-1 Convs, or a global average
pool -> flatten -> Gemm/MatMul head). Structured pruning removes channels of such groups;
equalization rescales them. Also: per-channel activation statistics on calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from compiler import onnxio
from compiler.graph import initializers
from compiler.passes.calibration import iterate, load_samples

PER_CHANNEL = frozenset({"BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
                         "Elu", "Selu", "Identity", "Dropout", "Tanh", "Softplus", "Mish", "Gelu"})
"""Ops that act on each channel on its own: a pruned channel can be dropped through them."""

POSITIVELY_HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "Identity", "Dropout"})
"""f(x / s) = f(x) / s for s > 0: a channel can be rescaled through them."""


@dataclass
class Group:
    """One prunable Conv with the nodes its channels flow through and into."""

    conv: onnx.NodeProto
    chain: list[onnx.NodeProto] = field(default_factory=list)  # element-wise / BN nodes after it
    tensor: str = ""  # the tensor the consumers read
    consumers: list[tuple[onnx.NodeProto, int]] = field(default_factory=list)  # (Conv or Gemm/MatMul, in-axis)


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def input_uses(model: onnx.ModelProto) -> dict[str, int]:
    """How many node inputs read each tensor or initializer."""
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    return uses


def int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
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
        return fc[0], 1 if int_attr(fc[0], "transB", 0) else 0
    return (fc[0], 0) if fc[0].op_type == "MatMul" else None


def is_depthwise(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A depthwise Conv (one filter per channel): channels pass through it one by one."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    dims = list(inits[node.input[1]].dims)
    return len(dims) == 4 and dims[1] == 1 and int_attr(node, "group", 1) == dims[0] > 1


def _follow(conv: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
            outputs: set[str], through: frozenset[str]) -> tuple[list[onnx.NodeProto], str] | None:
    """The per-channel chain after a Conv and the tensor at its end, or None if it leaks elsewhere."""
    chain: list[onnx.NodeProto] = []
    tensor = conv.output[0]
    while True:
        nxt = users.get(tensor, [])
        if tensor in outputs or not nxt:
            return None
        if len(nxt) == 1 and is_depthwise(nxt[0], inits):
            chain.append(nxt[0])
            tensor = nxt[0].output[0]
            continue
        if len(nxt) != 1 or nxt[0].op_type not in through:
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
        if (user.op_type == "Conv" and int_attr(user, "group", 1) == 1 and user.input[0] == tensor
                and user.input[1] in inits and uses[user.input[1]] == 1):
            found.append((user, 1))
        elif user.op_type == "GlobalAveragePool" and (head := _head(user, users, inits)) is not None:
            found.append(head)
        else:
            return None
    return found


def find_groups(model: onnx.ModelProto, exclude: set[str], through: frozenset[str] = PER_CHANNEL) -> list[Group]:
    inits = initializers(model)
    users = consumers(model)
    outputs = {o.name for o in model.graph.output}
    uses = input_uses(model)
    groups = []
    for conv in model.graph.node:
        if (conv.op_type != "Conv" or conv.name in exclude or int_attr(conv, "group", 1) != 1
                or conv.input[1] not in inits or uses[conv.input[1]] != 1):
            continue
        followed = _follow(conv, users, inits, outputs, through)
        readers = followed and _sliceable(followed[1], users, inits, uses)
        if followed and readers:
            groups.append(Group(conv, followed[0], followed[1], readers))
    return groups


@dataclass(frozen=True)
class ChannelStats:
    mean: np.ndarray
    std: np.ndarray
    absmax: np.ndarray


def activation_stats(model_path: Path, groups: list[Group], calibration: Path | None, samples: int,
                     what: str) -> dict[str, ChannelStats]:
    """Per-channel statistics of each group's tensor over the first ``samples`` calibration inputs."""
    arrays = load_samples(calibration, what)
    model = onnxio.load(model_path)
    present = {o.name for o in model.graph.output}
    for g in groups:
        if g.tensor not in present:
            model.graph.output.append(helper.make_empty_tensor_value_info(g.tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [g.tensor for g in groups]
    sums: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, sample in enumerate(iterate(arrays)):
        if i >= samples:
            break
        for name, value in zip(names, session.run(names, sample), strict=True):
            sums[name].append(np.moveaxis(value, 1, 0).reshape(value.shape[1], -1))
    stats = {}
    for name, parts in sums.items():
        flat = np.concatenate(parts, axis=1)
        stats[name] = ChannelStats(flat.mean(axis=1), flat.std(axis=1), np.abs(flat).max(axis=1))
    return stats


def write_input(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto], node: onnx.NodeProto, index: int,
                value: np.ndarray) -> None:
    """Give input ``index`` of ``node`` (an initializer) the new ``value``, copy on write: when other
    node inputs read the same initializer (the torch exporter de-duplicates identical folded biases
    and BatchNorm parameters), ``node`` gets a copy of its own and the other readers keep theirs."""
    name = node.input[index]
    dtype = numpy_helper.to_array(inits[name]).dtype
    readers = sum(1 for other in model.graph.node for i in other.input if i == name)
    if readers <= 1:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
        return
    base, n = f"{name}__{node.name or node.output[0]}", 0
    private = base
    while private in inits:
        n += 1
        private = f"{base}_{n}"
    model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), private))
    inits[private] = model.graph.initializer[-1]
    node.input[index] = private


