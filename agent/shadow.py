"""A shadow run: the installed candidate runs beside the active model on the same live frames,
and how often both see the same thing is counted (the same top label for classification, the
same set of labels for multi-label and detection). The result travels as a ShadowEvent; the
cloud's rollout gate decides what it means."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.model import LoadedBundle
from agent.postprocess import Prediction
from contract.signing import TrustStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    np = lazy("numpy")


@dataclass
class ShadowRun:
    job_id: str
    candidate: LoadedBundle
    frames: int = 0
    agreed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, job_id: str, directory: Path, trust: TrustStore, threads: int,
             engine_cache: Path | None = None) -> ShadowRun:
        return cls(job_id, LoadedBundle.open_bundle(directory, trust, threads, engine_cache))

    def compare(self, frame: npt.NDArray[np.uint8], active: Prediction) -> bool:
        """Run the candidate on ``frame``; True when it agrees with the active model's prediction."""
        self.frames += 1
        try:
            candidate = self.candidate.predict(frame).prediction
        except AgentError as exc:
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            return False
        same = set(candidate.labels) == set(active.labels)
        self.agreed += same
        return same

    def close(self) -> None:
        self.candidate.close()

    @property
    def agreement(self) -> float:
        return self.agreed / self.frames if self.frames else 0.0
