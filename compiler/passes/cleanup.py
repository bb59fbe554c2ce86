"""``cleanup``: make a real-world ONNX file regular before anything else touches it.

- initializers listed among the graph inputs (an old exporter habit) are taken out, so
  runtimes can fold them as constants;
- the opset is raised to the target's (per-channel QDQ needs >= 13);
- a dynamic batch dimension is fixed (static shapes quantize and build engines better);
- onnxslim folds constants and removes dead or redundant nodes;
- identical initializers are stored once (an exporter's copies of a tied weight; ``dedupe``);
- shape inference fills in value info for every tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import onnx
from onnx import version_converter
from pydantic import Field

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.dedupe import dedupe_initializers


class CleanupConfig(PassConfig):
    opset: Annotated[int, Field(ge=11, le=23)] | None = None  # None: keep the model's opset
    static_batch: Annotated[int, Field(ge=1)] | None = 1
    slim: bool = True


def remove_initializer_inputs(model: onnx.ModelProto) -> int:
    names = {init.name for init in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return removed


def fix_batch(model: onnx.ModelProto, batch: int) -> None:
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch


class Cleanup(Pass[CleanupConfig]):
    name = "cleanup"
    Config = CleanupConfig
    summary = "initializers out of inputs, opset upgrade, static batch, onnxslim, identical initializers once, " \
              "shape inference"
    exact = True

    def run(self, model: Path, config: CleanupConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        remove_initializer_inputs(proto)
        if config.opset is not None and onnxio.opset_of(proto) < config.opset:
            try:
                proto = version_converter.convert_version(proto, config.opset)
            except Exception as exc:  # the converter raises bare RuntimeErrors
                raise PassError(f"cannot convert the model from opset {onnxio.opset_of(proto)} to {config.opset}: "
                                f"{exc}") from exc
        if config.static_batch is not None:
            fix_batch(proto, config.static_batch)
            # value_info from the old dynamic shapes would contradict the fixed ones
            del proto.graph.value_info[:]
        if config.slim:
            import onnxslim

            proto = onnxslim.slim(proto)
        dedupe_initializers(proto)
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"the cleaned model is not valid ONNX: {exc}") from exc
        return onnxio.save(proto, workdir / "model.onnx")
