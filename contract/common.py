"""Small value types shared by several messages and the manifest."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from contract.base import ContractModel, Count, Name, Sha256
from contract.compat import StrEnum

Stream = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A model stream: the line of bundles whose ``sequence`` only grows (anti-rollback compares
sequences within one stream only). By default the model's name."""


class Runtime(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    TENSORRT = "tensorrt"


class RuntimeInfo(ContractModel):
    name: Runtime
    version: Name


class BundleRef(ContractModel):
    """Identifies one compiled bundle: which model, for which target, which build."""

    model_name: Name
    model_version: Name
    target: Name
    sequence: Count
    sha256: Sha256  # of manifest.json: the signed root that names every file's hash


class Histogram(ContractModel):
    """Counts over bins with ascending ``edges`` (len(counts) == len(edges) - 1)."""

    edges: Annotated[list[float], Field(min_length=2, max_length=257)]
    counts: Annotated[list[Count], Field(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _consistent(self) -> Histogram:
        if len(self.counts) != len(self.edges) - 1:
            raise ValueError(f"{len(self.counts)} counts need {len(self.counts) + 1} edges, got {len(self.edges)}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("histogram edges must be strictly ascending")
        return self


class LatencyStats(ContractModel):
    """Milliseconds."""

    p50: Annotated[float, Field(ge=0)]
    p95: Annotated[float, Field(ge=0)]
    p99: Annotated[float, Field(ge=0)]
    mean: Annotated[float, Field(ge=0)]
    max: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> LatencyStats:
        if not self.p50 <= self.p95 <= self.p99 <= self.max:
            raise ValueError("latency percentiles must satisfy p50 <= p95 <= p99 <= max")
        return self
