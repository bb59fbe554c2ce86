"""Model runtimes, chosen by the manifest's runtime name. Each is imported only when used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import RuntimeUnavailableError
from contract.common import Runtime


class ModelRuntime(Protocol):
    """A loaded model: named inputs in, outputs (in the model's output order) out."""

    name: str
    version: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feed: Mapping[str, npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]: ...


def open_runtime(runtime: Runtime | str, model: Path, threads: int = 1) -> ModelRuntime:
    """Load ``model`` with ``runtime``; RuntimeUnavailableError says what to install when it is missing."""
    kind = Runtime(runtime)
    if kind is Runtime.ONNXRUNTIME:
        from agent.runtimes.ort import OrtRuntime

        return OrtRuntime(model, threads)
    if kind is Runtime.LITERT:
        from agent.runtimes.litert import LiteRTRuntime

        return LiteRTRuntime(model, threads)
    raise RuntimeUnavailableError(f"runtime {kind.value} is not available in this agent build")


def as_float32(outputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[np.float32]]:
    return [np.asarray(o, dtype=np.float32) for o in outputs]
