"""``equalize``: cross-layer activation equalization before int8 quantization.

int8 activations share one scale per tensor, so a few channels with a wide range leave the
others only a handful of levels. For every Conv -> (ReLU/LeakyReLU) -> Conv group, channel
``c`` is scaled down by ``s_c`` in the producer (filters and bias) and back up in the
consumers' weights: the float model computes exactly the same function (ReLU and LeakyReLU
are positively homogeneous), but the activation ranges are balanced against the consumers'
weight ranges (SmoothQuant's rule, ``s_c = (a_c / mean a) ** alpha / (w_c / mean w) ** (1 - alpha)``),
so int8 activations lose far less.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field

from compiler import onnxio
from compiler.graph import initializers
from compiler.passes.base import Pass, PassConfig
from compiler.passes.channels import POSITIVELY_HOMOGENEOUS, activation_stats, find_groups, write_input


class EqualizeConfig(PassConfig):
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # 1: equalize activations only, 0: weights only
    max_scale: Annotated[float, Field(ge=1.0, le=1e4)] = 100.0
    samples: Annotated[int, Field(ge=1, le=1024)] = 32
    exclude_nodes: list[str] = []
    calibration: Path | None = None  # filled by the pipeline


class Equalize(Pass[EqualizeConfig]):
    name = "equalize"
    Config = EqualizeConfig
    summary = "cross-layer activation equalization (exact in float, better int8 activations)"
    exact = True

    def run(self, model: Path, config: EqualizeConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        groups = find_groups(proto, set(config.exclude_nodes), POSITIVELY_HOMOGENEOUS)
        inits = initializers(proto)
        stats = activation_stats(model, groups, config.calibration, config.samples, "equalize") if groups else {}
        for group in groups:
            act = np.maximum(stats[group.tensor].absmax, 1e-8)
            channels = act.size
            weight = np.max([np.abs(numpy_helper.to_array(inits[n.input[1]])).swapaxes(0, a).reshape(channels, -1)
                             .max(axis=1) for n, a in group.consumers], axis=0)
            weight = np.maximum(weight, 1e-8)
            scale = (act / act.mean()) ** config.alpha / (weight / weight.mean()) ** (1.0 - config.alpha)
            scale = np.clip(scale, 1.0 / config.max_scale, config.max_scale)
            w = numpy_helper.to_array(inits[group.conv.input[1]])
            write_input(proto, inits, group.conv, 1, w / scale.reshape(-1, *([1] * (w.ndim - 1))))
            if len(group.conv.input) > 2 and group.conv.input[2]:
                write_input(proto, inits, group.conv, 2, numpy_helper.to_array(inits[group.conv.input[2]]) / scale)
            for node in group.chain:  # depthwise Convs: weights act per channel, biases scale with it
                if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
                    write_input(proto, inits, node, 2, numpy_helper.to_array(inits[node.input[2]]) / scale)
            for node, axis in group.consumers:
                cw = numpy_helper.to_array(inits[node.input[1]])
                shape = [1] * cw.ndim
                shape[axis] = channels
                write_input(proto, inits, node, 1, cw * scale.reshape(shape))
        onnx.checker.check_model(proto)
        return onnxio.save(proto, workdir / "model.equalized.onnx")
