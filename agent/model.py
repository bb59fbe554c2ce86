"""The one path from a frame to a prediction: preprocess -> the runtime -> postprocess.

Everything that runs a model goes through :class:`LoadedModel`: the agent loop and its shadow
runs, the golden self-test, the profile command, ``coldchain agent infer``, the demo, and the
compiler's evaluation, latency and golden I/O. So what probation, shadow runs and compile-time
fidelity measure cannot drift apart. A verified bundle is a :class:`LoadedBundle`: verified once
when it is opened, closed when it is no longer active (``close()`` or ``with``).
``tests/agent/test_model.py`` fails if anything else calls a runtime's ``run()``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from agent import postprocess, runtimes, stats
from agent.postprocess import Prediction
from agent.preprocess import Letterbox, preprocess
from contract.bundle import manifest_sha256, verify_dir
from contract.common import BundleRef, Runtime
from contract.manifest import IOSpec, Manifest
from contract.signing import TrustStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    np = lazy("numpy")

Outputs: TypeAlias = "list[npt.NDArray[Any]]"


@dataclass(frozen=True)
class Inference:
    prediction: Prediction
    outputs: Outputs
    model_ms: float  # the runtime alone
    total_ms: float  # preprocessing, runtime and postprocessing
    seen: npt.NDArray[np.uint8] | None = None  # the frame as the model saw it (Letterbox.seen), for input statistics
    input_values: tuple[float, float, float] | None = None  # its input statistics (stats.frame_values), when asked for

    def finite(self) -> bool:
        """Whether every output is free of NaN and infinity: one float64 sum per output (it cannot
        overflow from float32 values, and NaN or an infinity carries through it), not an elementwise test."""
        return all(math.isfinite(np.asarray(o).sum(dtype=np.float64)) for o in self.outputs)


class LoadedModel:
    """A model file with its runtime open, and the IO spec that says how frames become inputs and
    outputs become predictions."""

    def __init__(self, runtime: runtimes.ModelRuntime, io: IOSpec) -> None:
        self.runtime = runtime
        self.io = io
        self._post = postprocess.get(io.postprocessor.name)

    @classmethod
    def open(cls, model: Path, io: IOSpec, runtime: Runtime | str, threads: int = 1,
             cache_dir: Path | None = None) -> LoadedModel:
        return cls(runtimes.open_runtime(runtime, model, threads, cache_dir), io)

    # ---- the path ---------------------------------------------------------------------------
    def prepare(self, frame: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[Any], Letterbox]:
        return preprocess(frame, self.io.preprocessing)

    def run(self, x: npt.NDArray[Any]) -> Outputs:
        """The model on one prepared input: the only call of a runtime's ``run`` in coldchain."""
        return [np.asarray(o) for o in self.runtime.run({self.io.inputs[0].name: x})]

    def decide(self, outputs: Outputs, place: Letterbox, overrides: dict[str, Any] | None = None) -> Prediction:
        params = self.io.postprocessor.params if not overrides else {**self.io.postprocessor.params, **overrides}
        return self._post(outputs, self.io.labels, params, place)

    def infer(self, x: npt.NDArray[Any], place: Letterbox) -> Inference:
        """A prepared input (the compiler prepares its evaluation images once) to a prediction."""
        started = time.perf_counter()
        outputs = self.run(x)
        model_ms = (time.perf_counter() - started) * 1000
        prediction = self.decide(outputs, place)
        return Inference(prediction, outputs, model_ms, (time.perf_counter() - started) * 1000)

    def predict(self, frame: npt.NDArray[np.uint8], statistics: bool = False) -> Inference:
        """A frame (BGR uint8, any size) to a prediction: :meth:`prepare`, :meth:`run`, :meth:`decide`
        (written out, not through :meth:`infer`: one result object per frame). With ``statistics``, also the
        input statistics of the image the model saw (``Inference.input_values``), taken between preprocessing and
        the inference, while that image and OpenCV are still in the CPU's caches: after the inference they
        cost twice as much (76 against 152 us for NanoDet's 416x416 input). Not counted in ``total_ms``."""
        started = time.perf_counter()
        x, place = self.prepare(frame)
        values, described = None, 0.0
        if statistics:
            before = time.perf_counter()
            values = stats.frame_values(frame if place.seen is None else place.seen)
            described = time.perf_counter() - before
        ran = time.perf_counter()
        outputs = self.run(x)
        model_ms = (time.perf_counter() - ran) * 1000
        prediction = self.decide(outputs, place)
        total_ms = (time.perf_counter() - started - described) * 1000
        return Inference(prediction, outputs, model_ms, total_ms, place.seen, values)

    # ---- timing -----------------------------------------------------------------------------
    def blank(self) -> npt.NDArray[Any]:
        """The model input made from a black frame."""
        spec = self.io.preprocessing
        return self.prepare(np.zeros((spec.height, spec.width, 3), np.uint8))[0]

    def time_runs(self, x: npt.NDArray[Any] | None = None, warmup: int = 5, iterations: int = 40) -> list[float]:
        """Milliseconds of each of ``iterations`` runs on one prepared input after ``warmup`` untimed
        ones (the compiler's latency, the device's profile command and its install-time timing)."""
        x = self.blank() if x is None else x
        return runtimes.time_runs(self.runtime, {self.io.inputs[0].name: x}, warmup, iterations)

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def paired_latency(a: LoadedModel, b: LoadedModel, rounds: int = 15, warmup: int = 3,
                   block_ms: float = 5.0) -> tuple[float, float]:
    """Median model latency (ms) of ``a`` and ``b`` timed in alternation on this device, each on its
    own preprocessing of the same black frame, so whatever slows the device slows both alike. Each
    round times a block of runs of each (at least ``block_ms`` long, so a sub-millisecond model is
    not judged on timer and cache noise), in alternating order."""
    xa, xb = a.blank(), b.blank()
    first = max(a.time_runs(xa, warmup, 3) + b.time_runs(xb, warmup, 3))
    n = max(1, min(200, int(block_ms / max(first, 1e-3))))
    times_a: list[float] = []
    times_b: list[float] = []
    for r in range(rounds):
        pair = ((a, xa, times_a), (b, xb, times_b))
        for model, x, times in pair if r % 2 == 0 else pair[::-1]:
            times.append(float(np.mean(model.time_runs(x, 0, n))))
    return float(np.median(times_a)), float(np.median(times_b))


class LoadedBundle(LoadedModel):
    """A bundle directory, verified once (signature, every file hash) when it is opened."""

    def __init__(self, directory: Path, manifest: Manifest, sha256: str, runtime: runtimes.ModelRuntime) -> None:
        super().__init__(runtime, manifest.io)
        self.directory, self.manifest, self.sha256 = directory, manifest, sha256

    @classmethod
    def open_bundle(cls, directory: Path, trust: TrustStore, threads: int = 1,
                    cache_dir: Path | None = None) -> LoadedBundle:
        manifest = verify_dir(directory, trust)
        runtime = runtimes.open_runtime(manifest.target.runtime.name, directory / manifest.model_file.path, threads,
                                        cache_dir)
        return cls(directory, manifest, manifest_sha256(directory), runtime)

    @property
    def ref(self) -> BundleRef:
        return BundleRef(model_name=self.manifest.model.name, model_version=self.manifest.model.version,
                         target=self.manifest.target.name, sequence=self.manifest.sequence, sha256=self.sha256)

    def __enter__(self) -> LoadedBundle:
        return self
