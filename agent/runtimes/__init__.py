"""Model runtimes, chosen by the manifest's runtime name. Each is imported only when used."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import RuntimeUnavailableError
from contract.common import Runtime

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    np = lazy("numpy")


class ModelRuntime(Protocol):
    """A loaded model: named inputs in, outputs (in the model's output order) out."""

    name: str
    version: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feed: Mapping[str, npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]: ...

    def close(self) -> None:
        """Free the session, interpreter or GPU buffers; the runtime is unusable afterwards."""


def open_runtime(runtime: Runtime | str, model: Path, threads: int = 1, cache_dir: Path | None = None) -> ModelRuntime:
    """Load ``model`` with ``runtime``; RuntimeUnavailableError says what to install when it is missing.
    ``cache_dir`` keeps built TensorRT engines (keyed by model, settings, TensorRT version and GPU)."""
    kind = Runtime(runtime)
    if kind is Runtime.ONNXRUNTIME:
        from agent.runtimes.ort import OrtRuntime

        return OrtRuntime(model, threads)
    if kind is Runtime.LITERT:
        from agent.runtimes.litert import LiteRTRuntime

        return LiteRTRuntime(model, threads)
    if kind is Runtime.TENSORRT:
        from agent.runtimes.tensorrt import TensorRTRuntime

        return TensorRTRuntime(model, threads, cache_dir)
    raise RuntimeUnavailableError(f"runtime {kind.value} is not available in this agent build")


def time_runs(runtime: ModelRuntime, feed: Mapping[str, npt.NDArray[Any]], warmup: int = 5,
              iterations: int = 40) -> list[float]:
    """Milliseconds of each of ``iterations`` calls of ``runtime.run`` on one ready input, after
    ``warmup`` untimed calls (the compiler's measurements and the device's profile command)."""
    for _ in range(warmup):
        runtime.run(feed)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        runtime.run(feed)
        times.append((time.perf_counter() - started) * 1000)
    return times


def as_float32(outputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[np.float32]]:
    return [np.asarray(o, dtype=np.float32) for o in outputs]


def available() -> dict[Runtime, str]:
    """The runtimes this device can load, with their versions (reported in the device state)."""
    # From the installed distributions, without importing them: importing onnxruntime alone costs
    # ~19 MiB resident, paid only once a bundle is loaded (TensorRT comes with JetPack: imported).
    found: dict[Runtime, str] = {}
    for runtime, distributions in ((Runtime.ONNXRUNTIME, ("onnxruntime", "onnxruntime-gpu")),
                                   (Runtime.LITERT, ("ai-edge-litert", "tflite-runtime"))):
        for distribution in distributions:
            try:
                found[runtime] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                pass
    try:
        import tensorrt

        found[Runtime.TENSORRT] = str(tensorrt.__version__)
    except ImportError:
        pass
    return found


def version_at_least(version: str, minimum: str) -> bool:
    """Compare dotted versions numerically (``1.32.0 >= 1.17``); unparsable parts count as 0."""

    def parts(v: str) -> list[int]:
        return [int(p) if p.isdigit() else 0 for p in v.split("+", maxsplit=1)[0].split(".")]

    a, b = parts(version), parts(minimum)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) >= b + [0] * (width - len(b))
