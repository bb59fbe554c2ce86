"""``fold.normalize``: the model takes raw pixels; the mean/std normalisation (and the cast from
uint8) run inside it, where the runtime does them, instead of in the agent's numpy code.

The graph input keeps its name and shape and becomes ``uint8`` (or ``float32`` pixel values with
``input_dtype: float32``); in front of the old first nodes come ``Cast`` -> ``Sub(mean)`` ->
``Mul(1 / std)``, per channel, in exactly the agent's arithmetic (``agent.preprocess``: float32
pixel minus float32 mean, times float32 of 1/std), so the folded model's outputs are bit for bit
those of the unfolded model on the agent's normalised input and fidelity cannot move. The model
file records what it now takes in its metadata (:data:`METADATA_KEY`): ``compiler.iospec`` writes
that into the manifest's preprocessing (``dtype: uint8``, mean 0, std 1), so the agent only resizes
and lays out the planes, and an older agent, which already passes uint8 pixels through as they
are, runs such a bundle unchanged. Bundles compiled before this pass keep their float input.

Put it after quantization: the calibration data and the quantizer see the float input as before.
A model whose description is not float32 (already raw or quantized input) is left as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from contract.base import Name
from contract.manifest import Layout, Preprocessing

METADATA_KEY = "coldchain.preprocessing"
"""ONNX ``metadata_props`` key: JSON of the preprocessing fields the folded model changed."""


class FoldNormalizeConfig(PassConfig):
    preprocessing: Preprocessing | None = None  # the description's (filled in by the pipeline)
    input: Name | None = None  # the graph input frames feed (the description's; filled in by the pipeline)
    input_dtype: Literal["uint8", "float32"] = "uint8"


def recorded_preprocessing(model: onnx.ModelProto) -> dict[str, object]:
    """What a folded model's metadata says its input now is (empty for any other model)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            value = json.loads(prop.value)
            if not isinstance(value, dict):
                raise PassError(f"the model's {METADATA_KEY} metadata is not a JSON object")
            return value
    return {}


class FoldNormalize(Pass[FoldNormalizeConfig]):
    name = "fold.normalize"
    Config = FoldNormalizeConfig
    summary = "raw uint8 pixels in: cast and mean/std normalisation folded into the model"
    exact = True  # bit-identical outputs on the same frames: checked on a few, not re-evaluated

    def run(self, model: Path, config: FoldNormalizeConfig, workdir: Path) -> Path:
        pre = config.preprocessing
        if model.suffix != ".onnx" or pre is None or config.input is None or pre.dtype != "float32":
            return model
        identity = pre.mean == [0.0, 0.0, 0.0] and pre.std == [1.0, 1.0, 1.0]
        if identity and config.input_dtype == "float32":
            return model
        proto = onnxio.load(model)
        graph = proto.graph
        found = [i for i in graph.input if i.name == config.input]
        if not found:
            raise PassError(f"fold.normalize: the model has no input {config.input!r} "
                            f"(inputs: {[i.name for i in graph.input]})")
        tensor = found[0].type.tensor_type
        if tensor.elem_type != TensorProto.FLOAT or len(tensor.shape.dim) != 4:
            return model
        name = config.input
        inner = f"{name}/normalized"
        for node in graph.node:
            node.input[:] = [inner if x == name else x for x in node.input]
        for out in graph.output:
            if out.name == name:
                raise PassError(f"fold.normalize: input {name!r} is also a graph output")
        shape = (1, 3, 1, 1) if pre.layout is Layout.NCHW else (1, 1, 1, 3)
        mean = np.asarray(pre.mean, np.float32).reshape(shape)
        inv_std = np.asarray([1.0 / s for s in pre.std], np.float32).reshape(shape)  # the agent's 1.0 / std[c]
        graph.initializer.extend([numpy_helper.from_array(mean, f"{name}/mean"),
                                  numpy_helper.from_array(inv_std, f"{name}/inv_std")])
        pixels = name
        nodes = []
        if config.input_dtype == "uint8":
            pixels = f"{name}/float"
            nodes.append(helper.make_node("Cast", [name], [pixels], name=f"{name}/cast", to=TensorProto.FLOAT))
            tensor.elem_type = TensorProto.UINT8
        nodes += [helper.make_node("Sub", [pixels, f"{name}/mean"], [f"{name}/centred"], name=f"{name}/sub_mean"),
                  helper.make_node("Mul", [f"{name}/centred", f"{name}/inv_std"], [inner], name=f"{name}/mul_inv_std")]
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + old)
        recorded = {"dtype": config.input_dtype, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        props = {p.key: p.value for p in proto.metadata_props}
        helper.set_model_props(proto, {**props, METADATA_KEY: json.dumps(recorded, sort_keys=True)})
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"the model with normalisation folded in is not valid ONNX: {exc}") from exc
        return onnxio.save(proto, workdir / "model.onnx")
