"""``fold.channel_shuffle``: rewrite ShuffleNet channel shuffles so int8 kernels keep one layout.

A ShuffleNet unit ends in ``Concat(A, B) -> Reshape(N, 2, k, H, W) -> Transpose(0, 2, 1, 3, 4)
-> Reshape(N, 2k, H, W)``, usually followed by ``Split`` into two halves. onnxruntime runs
int8 convolutions channels-last (NHWC), but cannot move its layout transposes through that
Reshape, so every unit pays two or three NCHW<->NHWC transposes; with two threads these
uint8 transposes are slower than the convolutions around them (measured: 20x slower than one
thread when the channel count is not a multiple of 128). NanoDet has 16 such shuffles.

A shuffle only reorders channels, and every channel of a ShuffleNet stage ends, after some
shuffles and splits, in a Conv: a group-1 Conv takes its input channels in any order (its
weights are permuted to match), and so does a depthwise Conv whose own readers do. So the
channel order never has to be materialised:

* a *region* is a set of connected shuffles and channel Splits; its inputs are tensors made
  by a group-1 Conv (through element-wise activations), its outputs are the tensors Convs read
  (a unit's branch input, the stage's output);
* each region input is emitted by its Conv in the order the region's outputs need (the Conv's
  filters are permuted), split once into one contiguous block per output;
* each region output is the Concat of its blocks, and its readers absorb the block order into
  their weights.

No op is added that computes anything (no permutation Conv): only Splits and Concats, which
onnxruntime's layout optimizer moves freely. A region whose channels reach anything else (a
graph output, a Conv sharing its weight, an excluded shuffle) is left as it is. Only two
groups are handled (ShuffleNet v2). The float model computes the same outputs (tested to 1e-5).
"""

from __future__ import annotations

import heapq
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

ELEMENTWISE = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu",
                         "Identity", "Tanh", "Softplus", "Mish", "Gelu"})
"""Parameter-free ops that act on each value alone: a channel order passes through them."""

Channel = tuple[str, int]  # (region input tensor, channel index in it)


class ChannelShuffleConfig(PassConfig):
    exclude_nodes: list[str] = []  # Transpose nodes of shuffles to leave alone


@dataclass
class _Region:
    ops: list[onnx.NodeProto] = field(default_factory=list)  # nodes removed when the region is folded
    inputs: list[str] = field(default_factory=list)
    tensors: set[str] = field(default_factory=set)  # tensors the region's ops make
    shuffles: int = 0


def _channels(model: onnx.ModelProto, name: str) -> int | None:
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    return None


def _split_sizes(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], channels: int | None) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(v) for v in numpy_helper.to_array(inits[node.input[1]])] if node.input[1] in inits else None
    sizes = next((list(a.ints) for a in node.attribute if a.name == "split"), None)
    if sizes:
        return [int(v) for v in sizes]
    parts = len(node.output)
    return [channels // parts] * parts if channels is not None and channels % parts == 0 else None


class _Folder:
    def __init__(self, model: onnx.ModelProto, exclude: set[str]) -> None:
        self.model = model
        self.exclude = exclude
        self.inits = initializers(model)
        self.users = consumers(model)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.uses = input_uses(model)
        self.outputs = {o.name for o in model.graph.output}
        self.opset = onnxio.opset_of(model)
        self.lists: dict[str, list[Channel]] = {}  # tensor -> its channels, by region input channel
        self.region_of: dict[str, _Region] = {}  # tensor -> region

    def _only(self, tensor: str, op: str) -> onnx.NodeProto | None:
        users = self.users.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op and tensor not in self.outputs else None

    # ---- finding regions ------------------------------------------------------------------------
    def _shuffle(self, concat: onnx.NodeProto) -> tuple[list[onnx.NodeProto], int] | None:
        """``concat`` -> Reshape(N, 2, k, H, W) -> Transpose(0, 2, 1, 3, 4) -> Reshape: its nodes and k."""
        if len(concat.input) != 2 or int_attr(concat, "axis", 0) not in (1, -3):
            return None
        groups = self._only(concat.output[0], "Reshape")
        transpose = groups and self._only(groups.output[0], "Transpose")
        merge = transpose and self._only(transpose.output[0], "Reshape")
        if groups is None or transpose is None or merge is None or groups.input[1] not in self.inits:
            return None
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        shape = numpy_helper.to_array(self.inits[groups.input[1]])
        if perm != [0, 2, 1, 3, 4] or transpose.name in self.exclude or len(shape) != 5 or int(shape[1]) != 2:
            return None
        k = int(shape[2])
        sizes = [_channels(self.model, t) for t in concat.input]
        if None in sizes or sum(sizes) != 2 * k:  # type: ignore[arg-type]
            return None
        return [concat, groups, transpose, merge], k

    def _list(self, tensor: str, region: _Region) -> list[Channel] | None:
        if tensor in self.lists:
            return self.lists[tensor]
        channels = _channels(self.model, tensor)
        if channels is None:
            return None
        region.inputs.append(tensor)
        return [(tensor, c) for c in range(channels)]

    def _merge(self, region: _Region, tensors: list[str]) -> _Region:
        for t in tensors:
            other = self.region_of.get(t)
            if other is not None and other is not region:
                region.ops += other.ops
                region.inputs += [i for i in other.inputs if i not in region.inputs]
                region.tensors |= other.tensors
                region.shuffles += other.shuffles
                for name in other.tensors | set(other.inputs):
                    self.region_of[name] = region
        return region

    def _claim(self, region: _Region, ops: list[onnx.NodeProto], made: dict[str, list[Channel]]) -> None:
        region.ops += ops
        region.tensors |= set(made)
        self.lists.update(made)
        for name in list(made) + region.inputs:
            self.region_of[name] = region

    def find(self) -> list[_Region]:
        shuffle_inputs = set()
        shuffles = {}
        for node in self.model.graph.node:
            if node.op_type == "Concat" and (found := self._shuffle(node)) is not None:
                shuffles[node.name] = found
                shuffle_inputs |= set(node.input)
        for node in self.model.graph.node:  # graph order: a region's inputs come before its ops
            if node.name in shuffles:
                (concat, *rest), k = shuffles[node.name]
                region = self._merge(_Region(), list(concat.input))
                a, b = (self._list(t, region) for t in concat.input)
                if a is None or b is None:
                    continue
                joined = a + b
                self._claim(region, [concat, *rest], {rest[-1].output[0]: [joined[(c % 2) * k + c // 2]
                                                                          for c in range(2 * k)]})
                region.shuffles += 1
            elif node.op_type == "Split" and int_attr(node, "axis", 0) in (1, -3) and (
                    node.input[0] in self.lists or shuffle_inputs & set(node.output)):
                region = self._merge(_Region(), [node.input[0]])
                whole = self._list(node.input[0], region)
                sizes = _split_sizes(node, self.inits, None if whole is None else len(whole))
                if whole is None or sizes is None or sum(sizes) != len(whole):
                    continue
                starts = np.cumsum([0, *sizes])
                self._claim(region, [node], {out: whole[starts[i]:starts[i + 1]] for i, out in enumerate(node.output)})
        return list({id(r): r for r in self.region_of.values()}.values())

    # ---- checking a region ----------------------------------------------------------------------
    def _own(self, name: str) -> bool:
        return name in self.inits and self.uses.get(name, 0) == 1

    def _absorbing(self, tensor: str, depth: int = 0) -> bool:
        """Every reader is a Conv taking ``tensor`` as data with a weight of its own: group 1
        (permuted input channels), or depthwise whose own readers absorb (permuted filters)."""
        users = self.users.get(tensor, [])
        if tensor in self.outputs or not users:
            return False
        for conv in users:
            if conv.op_type != "Conv" or conv.input[0] != tensor or not self._own(conv.input[1]):
                return False
            if int_attr(conv, "group", 1) != 1:
                bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
                weight = self.inits[conv.input[1]]
                if depth > 0 or weight.dims[1] != 1 or int_attr(conv, "group", 1) != weight.dims[0] \
                        or (bias is not None and not self._own(bias)) \
                        or not self._absorbing(conv.output[0], depth + 1):
                    return False
        return True

    def _source(self, tensor: str, region: _Region) -> onnx.NodeProto | None:
        """The group-1 Conv that makes ``tensor`` (through element-wise ops), if only the region reads it."""
        if tensor in self.outputs or any(u not in region.ops for u in self.users.get(tensor, [])):
            return None
        node: onnx.NodeProto | None = self.producer.get(tensor)
        while node is not None and node.op_type in ELEMENTWISE and len(self.users.get(node.output[0], [])) == 1:
            node = self.producer.get(node.input[0])
            if node is not None and (len(self.users.get(node.output[0], [])) != 1 or node.output[0] in self.outputs):
                return None
        if node is None or node.op_type != "Conv" or int_attr(node, "group", 1) != 1 or not self._own(node.input[1]):
            return None
        return node

    def _ends(self, region: _Region) -> list[str] | None:
        """The region's outputs (tensors read outside it), if every one is absorbed by Convs."""
        inside = {id(n) for n in region.ops}
        ends = [t for n in self.model.graph.node if id(n) in inside for t in n.output
                if t in self.outputs or any(id(u) not in inside for u in self.users.get(t, []))]
        if any(any(id(u) in inside for u in self.users.get(t, [])) or not self._absorbing(t) for t in ends):
            return None
        return ends

    # ---- rewriting ------------------------------------------------------------------------------
    def fold(self, region: _Region, added: list[tuple[float, onnx.NodeProto]], place: dict[str, float]) -> bool:
        ends = self._ends(region)
        convs = {t: self._source(t, region) for t in region.inputs}
        if ends is None or any(c is None for c in convs.values()):
            return False
        counts = {name: [sum(t == name for t, _ in self.lists[end]) for end in ends] for name in region.inputs}
        if any(sum(counts[name]) != _channels(self.model, name) for name in region.inputs):
            return False  # a channel that no output reads, or reads twice
        blocks: dict[str, list[tuple[str, str]]] = {end: [] for end in ends}  # end -> (input, block tensor)
        for name, conv in convs.items():
            assert conv is not None
            # the Conv emits its channels grouped by the output that reads them, in that output's order
            order = [c for end in ends for (t, c) in self.lists[end] if t == name]
            write_input(self.model, self.inits, conv, 1, numpy_helper.to_array(self.inits[conv.input[1]])[order])
            if len(conv.input) > 2 and conv.input[2]:
                write_input(self.model, self.inits, conv, 2, numpy_helper.to_array(self.inits[conv.input[2]])[order])
            used = [(end, size) for end, size in zip(ends, counts[name], strict=True) if size]
            if len(used) == 1:
                blocks[used[0][0]].append((name, name))
                continue
            parts = [f"{name}_for_{end}" for end, _ in used]
            added.append((place[name] + 0.5, self._split(name, parts, [size for _, size in used])))
            for (end, _), part in zip(used, parts, strict=True):
                blocks[end].append((name, part))
        for end in ends:
            offset, position = {}, 0
            for name, _ in blocks[end]:
                offset[name] = position
                position += sum(t == name for t, _ in self.lists[end])
            seen = dict.fromkeys(offset, 0)
            order = []
            for t, _ in self.lists[end]:
                order.append(offset[t] + seen[t])
                seen[t] += 1
            joined = blocks[end][0][1]
            if len(blocks[end]) > 1:
                joined = f"{end}_joined"
                added.append((min(place[u.output[0]] for u in self.users[end]) - 0.5,
                              helper.make_node("Concat", [b for _, b in blocks[end]], [joined], name=joined, axis=1)))
            self._absorb(end, joined, np.array(order))
        return True

    def _split(self, tensor: str, outs: list[str], sizes: list[int]) -> onnx.NodeProto:
        name = f"{tensor}_blocks"
        if self.opset >= 13:
            self.model.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), f"{name}_sizes"))
            return helper.make_node("Split", [tensor, f"{name}_sizes"], outs, name=name, axis=1)
        return helper.make_node("Split", [tensor], outs, name=name, axis=1, split=sizes)

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


def _ordered(nodes: list[tuple[float, onnx.NodeProto]]) -> list[onnx.NodeProto]:
    """Topological order, each node as close to its preferred place as its inputs allow."""
    made = {o: i for i, (_, n) in enumerate(nodes) for o in n.output}
    waiting = {i: {made[t] for t in n.input if t in made and made[t] != i} for i, (_, n) in enumerate(nodes)}
    readers: dict[int, list[int]] = {}
    for i, deps in waiting.items():
        for d in deps:
            readers.setdefault(d, []).append(i)
    ready = [(nodes[i][0], i) for i, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    out = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(nodes[i][1])
        for r in readers.get(i, []):
            waiting[r].discard(i)
            if not waiting[r]:
                heapq.heappush(ready, (nodes[r][0], r))
    return out


def fold_shuffles(model: onnx.ModelProto, exclude: Collection[str] = ()) -> int:
    """Fold every foldable two-group channel shuffle of ``model`` in place; returns how many."""
    if any(not node.name for node in model.graph.node):
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{i}"
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    folder = _Folder(model, set(exclude))
    place = {o: float(i) for i, n in enumerate(model.graph.node) for o in n.output}
    place.update({i.name: -1.0 for i in model.graph.input})
    added: list[tuple[float, onnx.NodeProto]] = []
    removed: set[int] = set()
    count = 0
    for region in folder.find():
        if region.shuffles and folder.fold(region, added, place):
            removed |= {id(n) for n in region.ops}
            count += region.shuffles
    if count:
        kept = [(float(i), n) for i, n in enumerate(model.graph.node) if id(n) not in removed]
        nodes = _ordered(kept + added)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
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
