"""LiteRT (TFLite) through ``ai-edge-litert``, falling back to ``tflite-runtime``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelLoadFailed, RuntimeUnavailableError


def _interpreter_class() -> tuple[Any, str]:
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as tflite

        return tflite.Interpreter, getattr(tflite_runtime, "__version__", "unknown")
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "no LiteRT runtime: install coldchain[litert] (ai-edge-litert) or tflite-runtime"
        ) from exc


class LiteRTRuntime:
    name = "litert"

    def __init__(self, model: Path, threads: int = 1) -> None:
        cls, self.version = _interpreter_class()
        try:
            self.interpreter = cls(model_path=str(model), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadFailed(f"LiteRT cannot load {model.name}: {exc}") from exc
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        self.input_names = [d["name"] for d in self._inputs]
        self.output_names = [d["name"] for d in self._outputs]

    def close(self) -> None:
        self.interpreter = None

    def run(self, feed: Mapping[str, npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]:
        for detail in self._inputs:
            self.interpreter.set_tensor(detail["index"], feed[detail["name"]])
        self.interpreter.invoke()
        return [_dequantize(self.interpreter.get_tensor(d["index"]), d) for d in self._outputs]


def _dequantize(value: npt.NDArray[Any], detail: dict[str, Any]) -> npt.NDArray[Any]:
    """Quantized outputs as float32 ((q - zero_point) * scale), so postprocessors see real scores."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale or value.dtype.kind == "f":
        return value
    real: npt.NDArray[np.float32] = (value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return real
