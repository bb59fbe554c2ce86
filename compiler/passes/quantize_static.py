"""``quantize.static``: post-training static int8 quantization with onnxruntime.quantization.

QDQ (default; what TensorRT and the ORT ARM/x86 kernels want) or QOperator; per-channel
weights (needs opset >= 13: run ``cleanup`` with the target opset first); MinMax, Entropy
or Percentile calibration on the pipeline's calibration tensors; op types to quantize and
nodes to keep in float (the pipeline fills ``exclude_nodes`` from per-node sensitivity);
optionally one range for the tensors each Concat joins (``qdq_scales``). Identical int8 weights
(a tied weight whose copies differed by their folded BatchNorm scale) are stored once (``dedupe``).
Calibration ranges depend on the model, the calibration data and the calibration settings,
not on which nodes are kept in float: with ``cache_dir`` (filled by the pipeline) they are
computed once and reused by every candidate of a float-fallback search.
On x86 and ARM, U8S8 (uint8 activations, int8 symmetric weights) is the fast combination.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import onnxruntime
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from pydantic import Field

from compiler import onnxio
from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig, quiet_root_logger
from compiler.passes.calibration import NpzReader, load_samples
from compiler.passes.dedupe import dedupe_file
from compiler.passes.qdq_scales import share_concat_scales

_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


class QuantizeStaticConfig(PassConfig):
    format: Literal["QDQ", "QOperator"] = "QDQ"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: Annotated[float, Field(gt=90.0, le=100.0)] = 99.999
    moving_average: bool = False  # MinMax: average per-batch ranges instead of the global extremes
    quantize_bias: bool = True
    # match each Conv's per-channel output mean (and spread) to the float model, layer by layer;
    # keeps biases in float
    bias_correction: bool = False
    correct_scale: bool = True
    correction_samples: Annotated[int, Field(ge=1, le=1024)] = 32
    # one range for all tensors a Concat joins: onnxruntime then copies instead of requantizing
    share_concat_scales: bool = False
    op_types: list[str] | None = None  # None: every op type onnxruntime can quantize
    exclude_nodes: list[str] = []
    calibration: Path | None = None  # filled by the pipeline: .npz of calibration inputs
    cache_dir: Path | None = None  # filled by the pipeline: where calibration ranges are kept


def ranges_file(model: Path, config: QuantizeStaticConfig) -> Path | None:
    """Where the calibration ranges of ``model`` under ``config`` are cached, or None without a cache."""
    if config.cache_dir is None or config.calibration is None:
        return None
    digest = hashlib.sha256()
    for path in (model, config.calibration):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    settings = config.model_dump(mode="json", include={"calibration_method", "percentile", "moving_average",
                                                       "symmetric_activations", "op_types"})
    digest.update(json.dumps([settings, onnxruntime.__version__], sort_keys=True).encode())
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    return config.cache_dir / f"ranges-{digest.hexdigest()[:32]}.json"


class QuantizeStatic(Pass[QuantizeStaticConfig]):
    name = "quantize.static"
    Config = QuantizeStaticConfig
    summary = "post-training static int8 (QDQ/QOperator, per-channel, MinMax/Entropy/Percentile)"

    def run(self, model: Path, config: QuantizeStaticConfig, workdir: Path) -> Path:
        proto = onnxio.load(model)
        if config.per_channel and onnxio.opset_of(proto) < 13:
            raise PassError(f"per-channel quantization needs opset >= 13, the model has {onnxio.opset_of(proto)}: "
                            "run the cleanup pass with opset: 13 or more first")
        reader = NpzReader(load_samples(config.calibration, "quantize.static"))
        out = workdir / "model.int8.onnx"
        extra = {
            "ActivationSymmetric": config.symmetric_activations,
            "WeightSymmetric": config.symmetric_weights,
            "CalibPercentile": config.percentile,
            "CalibTensorRangeSymmetric": config.symmetric_activations,
            "CalibMovingAverage": config.moving_average,
            "QuantizeBias": config.quantize_bias and not config.bias_correction,
        }
        try:
            with quiet_root_logger():
                quantize_static(
                    str(model), str(out), reader,
                    quant_format=QuantFormat.QDQ if config.format == "QDQ" else QuantFormat.QOperator,
                    op_types_to_quantize=config.op_types, per_channel=config.per_channel,
                    activation_type=_TYPES[config.activation_type], weight_type=_TYPES[config.weight_type],
                    nodes_to_exclude=list(config.exclude_nodes),
                    calibrate_method=_METHODS[config.calibration_method], extra_options=extra,
                    calibration_cache_path=ranges_file(model, config),
                )
        except Exception as exc:  # onnxruntime.quantization raises bare exceptions of many kinds
            raise PassError(f"static quantization failed: {type(exc).__name__}: {exc}") from exc
        if config.share_concat_scales:
            quantized = onnxio.load(out)
            if share_concat_scales(quantized):
                onnxio.save(quantized, out)
        if config.bias_correction:
            from compiler.passes.bias_correction import correct

            correct(model, out, config.calibration, config.correction_samples, config.correct_scale)  # type: ignore[arg-type]
        dedupe_file(out)
        return out
