"""Golden-I/O self-test: does this device's runtime give the outputs the compiler recorded?

``golden.npz`` layout (written by the compiler):

- ``frame/{i}``: a small real frame (uint8, BGR), run through the manifest's preprocessing,
  so the self-test covers decode-free preprocessing, the runtime and its kernels;
- ``output/{i}/{j}``: every ``stride/{j}``-th element of output ``j`` (flattened), which
  keeps the file small for detectors with large outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.model import LoadedModel
from contract.manifest import Golden

if TYPE_CHECKING:
    import numpy as np
else:
    from agent.lazy import lazy

    np = lazy("numpy")

MAX_GOLDEN_VALUES = 1024  # per output and case


@dataclass(frozen=True)
class SelfTest:
    passed: bool
    cases: int
    max_abs_error: float
    tolerance: float


def output_stride(size: int) -> int:
    return max(1, -(-size // MAX_GOLDEN_VALUES))


def run_golden(model: LoadedModel, golden: Golden, path: Path) -> SelfTest:
    """Run every golden case; passes when every sampled output is within ``atol + rtol * |expected|``."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise AgentError(f"golden file {path.name} is unreadable: {exc}") from exc
    worst, ok = 0.0, True
    with data:
        for i in range(golden.cases):
            outputs = model.run(model.prepare(data[f"frame/{i}"])[0])
            for j, out in enumerate(outputs):
                stride = int(data[f"stride/{j}"])
                got = np.asarray(out, np.float32).ravel()[::stride]
                expected = data[f"output/{i}/{j}"].astype(np.float32)
                if got.shape != expected.shape:
                    return SelfTest(False, golden.cases, float("inf"), golden.atol)
                error = np.abs(got - expected)
                worst = max(worst, float(error.max()) if error.size else 0.0)
                ok &= bool(np.all(error <= golden.atol + golden.rtol * np.abs(expected)))
                ok &= bool(np.all(np.isfinite(got)))
    return SelfTest(ok, golden.cases, worst, golden.atol)
