"""Identical initializers stored once: exact in float, run by the passes that can create copies.

Tied weights (one Conv applied several times) become one copy per application when ``cleanup``
folds each application's BatchNorm into it; per-channel int8 quantization then gives every copy
the same int8 tensor (the BatchNorm scale goes into the per-channel scales). Exporters also
write tied weights as copies. Two initializers of the main graph with the same element type,
shape and bytes are one tensor: every reader of the copy (in subgraphs too) reads the first,
and the copy is dropped. A hash of the bytes groups candidates; equal bytes decide.

Left alone: initializers that are also graph inputs (a caller may feed another value), graph
outputs, and tensors under ``MIN_BYTES`` (scales and zero points: nothing to save).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler import onnxio

MIN_BYTES = 1024


@dataclass(frozen=True)
class Deduped:
    copies: int  # initializers dropped
    bytes: int  # their bytes


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename(attr.g, renames)
            for sub in attr.graphs:
                _rename(sub, renames)


def dedupe_initializers(model: onnx.ModelProto, min_bytes: int = MIN_BYTES) -> Deduped:
    """Store every set of identical initializers of ``model``'s graph once (in place)."""
    graph = model.graph
    pinned = {i.name for i in graph.input} | {o.name for o in graph.output}
    kept: dict[tuple[int, tuple[int, ...], bytes], list[tuple[str, bytes]]] = {}
    renames: dict[str, str] = {}
    saved = 0
    for init in graph.initializer:
        if init.name in pinned:
            continue
        data = np.ascontiguousarray(numpy_helper.to_array(init)).tobytes()
        if len(data) < min_bytes:
            continue
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data).digest())
        same = kept.setdefault(key, [])
        first = next((name for name, other in same if other == data), None)
        if first is None:
            same.append((init.name, data))
        else:
            renames[init.name] = first
            saved += len(data)
    if not renames:
        return Deduped(0, 0)
    _rename(graph, renames)
    keep = [i for i in graph.initializer if i.name not in renames]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    values = [v for v in graph.value_info if v.name not in renames]
    del graph.value_info[:]
    graph.value_info.extend(values)
    return Deduped(len(renames), saved)


def dedupe_file(path: Path) -> Deduped:
    """``dedupe_initializers`` on a model file, rewritten in place when copies were found."""
    proto = onnxio.load(path)
    found = dedupe_initializers(proto)
    if found.copies:
        onnxio.save(proto, path)
    return found
