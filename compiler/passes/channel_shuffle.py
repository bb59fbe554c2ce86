"""``fold.channel_shuffle``: rewrite ShuffleNet channel shuffles so int8 kernels keep one layout.

A ShuffleNet unit ends in ``Concat(A, B) -> Reshape(N, 2, k, H, W) -> Transpose(0, 2, 1, 3, 4)
-> Reshape(N, 2k, H, W)``, usually followed by ``Split`` into two halves. onnxruntime runs
int8 convolutions channels-last (NHWC), but cannot move its layout transposes through that
Reshape, so every unit pays two or three NCHW<->NHWC transposes; with two threads these
uint8 transposes are slower than the convolutions around them (measured: 20x slower than one
thread when the channel count is not a multiple of 128). NanoDet has 16 such shuffles.

The rewrite expresses the same function with ops the layout optimizer moves freely:

* each half of the shuffled tensor interleaves one half of ``A`` with one half of ``B``, so
  ``A`` and ``B`` are split in halves and the matching halves concatenated;
* a group-1 Conv reading a half absorbs the interleaving order into its weights (its input
  channels are permuted), at no cost; so does a depthwise Conv whose own readers do (its
  filters are permuted, and its readers absorb the same order);
* any other reader gets the half in its exact order from a 1x1 permutation Conv (0/1
  weights, one 1 per row: exact in float, and exact in int8 because input and output share
  one quantization range).

Without a following Split, readers that all absorb take the whole shuffle into their
weights; otherwise that shuffle is left as it is. Only two groups are handled (ShuffleNet v2).
The float model computes the same outputs (tested to 1e-5).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler import onnxio
from compiler.graph import initializers
from compiler.passes.base import Pass, PassConfig
from compiler.passes.channels import consumers, input_uses, int_attr, write_input


class ChannelShuffleConfig(PassConfig):
    exclude_nodes: list[str] = []  # Transpose nodes of shuffles to leave alone


@dataclass
class _Edit:
    """Nodes to add where a shuffle's Concat was, and the nodes it replaces."""

    remove: set[str] = field(default_factory=set)
    add: list[onnx.NodeProto] = field(default_factory=list)


def _users(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Readers of every tensor; a graph output counts as a reader that absorbs nothing."""
    users = consumers(model)
    for out in model.graph.output:
        users.setdefault(out.name, []).append(onnx.NodeProto(op_type="<graph output>"))
    return users


def _channels(model: onnx.ModelProto, name: str) -> int | None:
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    return None


def _split_sizes(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(v) for v in numpy_helper.to_array(inits[node.input[1]])] if node.input[1] in inits else None
    sizes = next((list(a.ints) for a in node.attribute if a.name == "split"), None)
    return [int(v) for v in sizes] if sizes else None


class _Rewriter:
    def __init__(self, model: onnx.ModelProto, exclude: set[str]) -> None:
        self.model = model
        self.exclude = exclude
        self.inits = initializers(model)
        self.users = _users(model)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.weight_uses = input_uses(model)
        self.opset = onnxio.opset_of(model)
        self.edits: dict[str, _Edit] = {}  # keyed by the Concat's output
        self.removed: set[str] = set()

    def _only_user(self, tensor: str, op: str) -> onnx.NodeProto | None:
        users = self.users.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def _own_weight(self, conv: onnx.NodeProto, axis: int, channels: int) -> bool:
        weight = conv.input[1]
        return (weight in self.inits and self.weight_uses.get(weight, 0) == 1
                and numpy_helper.to_array(self.inits[weight]).shape[axis] == channels)

    def _depthwise(self, conv: onnx.NodeProto, channels: int) -> bool:
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        return (int_attr(conv, "group", 1) == channels and self._own_weight(conv, 0, channels)
                and (bias is None or (bias in self.inits and self.weight_uses.get(bias, 0) == 1)))

    def _absorbing(self, tensor: str, channels: int, depth: int = 0) -> bool:
        """Every reader is a Conv taking ``tensor`` as data with weights of its own: group 1
        (permuted input channels), or depthwise whose own readers absorb (permuted filters)."""
        users = self.users.get(tensor, [])
        for conv in users:
            if conv.op_type != "Conv" or conv.input[0] != tensor:
                return False
            if int_attr(conv, "group", 1) == 1:
                if not self._own_weight(conv, 1, channels):
                    return False
            elif depth > 0 or not self._depthwise(conv, channels) \
                    or not self._absorbing(conv.output[0], channels, depth + 1):
                return False
        return bool(users)

    def _absorb(self, tensor: str, source: str, order: np.ndarray) -> None:
        """Readers of ``tensor`` (= ``source[order]``) read ``source`` with permuted weights; a
        depthwise reader then computes its output in ``source`` order for its own readers."""
        for conv in list(self.users[tensor]):
            w = numpy_helper.to_array(self.inits[conv.input[1]])
            permuted = np.empty_like(w)
            if int_attr(conv, "group", 1) == 1:
                permuted[:, order] = w
            else:
                permuted[order] = w
                if len(conv.input) > 2 and conv.input[2]:
                    bias = numpy_helper.to_array(self.inits[conv.input[2]])
                    moved = np.empty_like(bias)
                    moved[order] = bias
                    write_input(self.model, self.inits, conv, 2, moved)
                self._absorb(conv.output[0], conv.output[0], order)
            write_input(self.model, self.inits, conv, 1, permuted)
            conv.input[0] = source

    def _perm_conv(self, source: str, order: np.ndarray, out: str, name: str) -> onnx.NodeProto:
        w = np.zeros((len(order), len(order), 1, 1), np.float32)
        w[np.arange(len(order)), order, 0, 0] = 1.0
        self.model.graph.initializer.append(numpy_helper.from_array(w, f"{name}_weight"))
        return helper.make_node("Conv", [source, f"{name}_weight"], [out], name=name, kernel_shape=[1, 1])

    def _halves(self, tensor: str, half: int, name: str, edit: _Edit) -> tuple[str, str]:
        lo, hi = f"{name}_lo", f"{name}_hi"
        if self.opset >= 13:
            sizes = f"{name}_halves"
            self.model.graph.initializer.append(numpy_helper.from_array(np.array([half, half], np.int64), sizes))
            edit.add.append(helper.make_node("Split", [tensor, sizes], [lo, hi], name=name, axis=1))
        else:
            edit.add.append(helper.make_node("Split", [tensor], [lo, hi], name=name, axis=1, split=[half, half]))
        return lo, hi

    def rewrite(self, transpose: onnx.NodeProto) -> bool:
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        if perm != [0, 2, 1, 3, 4] or transpose.name in self.exclude:
            return False
        groups = self.producer.get(transpose.input[0])
        if groups is None or groups.op_type != "Reshape" or groups.input[1] not in self.inits:
            return False
        shape = numpy_helper.to_array(self.inits[groups.input[1]])
        concat = self.producer.get(groups.input[0])
        merge = self._only_user(transpose.output[0], "Reshape")
        if (len(shape) != 5 or int(shape[1]) != 2 or concat is None or concat.op_type != "Concat"
                or len(concat.input) != 2 or int_attr(concat, "axis", 0) not in (1, -3) or merge is None
                or self._only_user(concat.output[0], "Reshape") is None
                or self._only_user(groups.output[0], "Transpose") is None):
            return False
        k = int(shape[2])
        a, b = concat.input
        if _channels(self.model, a) != k or _channels(self.model, b) != k or k % 2:
            return False
        shuffled = merge.output[0]
        split = self._only_user(shuffled, "Split")
        edit = _Edit(remove={concat.name, groups.name, transpose.name, merge.name})
        base = transpose.name or shuffled
        if split is not None and int_attr(split, "axis", 0) in (1, -3) \
                and _split_sizes(split, self.inits) == [k, k] and len(split.output) == 2:
            a_lo, a_hi = self._halves(a, k // 2, f"{base}_a", edit)
            b_lo, b_hi = self._halves(b, k // 2, f"{base}_b", edit)
            c = np.arange(k)
            order = c // 2 + (c % 2) * (k // 2)  # half[c] = concat(A half, B half)[order[c]]
            for part, (lo, hi), out in (("lo", (a_lo, b_lo), split.output[0]),
                                        ("hi", (a_hi, b_hi), split.output[1])):
                joined = f"{base}_{part}"
                edit.add.append(helper.make_node("Concat", [lo, hi], [joined], name=joined, axis=1))
                if self._absorbing(out, k):
                    self._absorb(out, joined, order)
                else:
                    edit.add.append(self._perm_conv(joined, order, out, f"{base}_{part}_permute"))
            edit.remove.add(split.name)
        elif self._absorbing(shuffled, 2 * k):
            c = np.arange(2 * k)
            self._absorb(shuffled, concat.output[0], c // 2 + (c % 2) * k)
            edit.remove -= {concat.name}
        else:
            return False
        self.edits[concat.name] = edit
        self.removed |= edit.remove
        return True

    def apply(self) -> int:
        count = sum(self.rewrite(node) for node in list(self.model.graph.node) if node.op_type == "Transpose")
        nodes: list[onnx.NodeProto] = []
        for node in self.model.graph.node:
            if node.name in self.edits:
                nodes.extend(self.edits[node.name].add)
            if node.name not in self.removed:
                nodes.append(node)
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)
        return count


def fold_shuffles(model: onnx.ModelProto, exclude: Collection[str] = ()) -> int:
    """Rewrite every two-group channel shuffle of ``model`` in place; returns how many."""
    if any(not node.name for node in model.graph.node):
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{i}"
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    count = _Rewriter(model, set(exclude)).apply()
    if count:
        del model.graph.value_info[:]  # stale shapes of removed tensors
    return count


class ChannelShuffle(Pass[ChannelShuffleConfig]):
    name = "fold.channel_shuffle"
    Config = ChannelShuffleConfig
    summary = "ShuffleNet channel shuffles as Split/Concat + permuted Conv weights (one int8 layout)"
    exact = True

    def run(self, model: Path, config: ChannelShuffleConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        if not fold_shuffles(proto, set(config.exclude_nodes)):
            return model  # nothing to fold: the pipeline records no step
        out = workdir / "model.onnx"
        onnxio.save(proto, out)
        return out
