"""Target profiles: a target is a YAML file in ``compiler/targets/`` loaded into a typed profile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from compiler.errors import TargetError
from contract.base import ContractModel, Identifier, Name, Text, problems_of
from contract.common import Runtime

TARGETS_DIR = Path(__file__).parent / "targets"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Board(ContractModel):
    # the board names devices report (agent config ``board``) that this target's bundles run on;
    # written into the manifest (``boards``), checked by the device and by the cloud's rollouts
    names: Annotated[list[Identifier], Field(min_length=1, max_length=32)]
    arch: Literal["arm64", "x86_64"]
    cpu: Name
    cores: Annotated[int, Field(ge=1, le=256)]
    memory_mb: Annotated[int, Field(ge=64)]
    accelerator: Name | None = None


class RuntimeProfile(ContractModel):
    name: Runtime
    min_version: Name
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    # ops (or "domain:*" for a whole domain) that this runtime cannot run; checked before compiling
    unsupported_ops: list[Name] = []


class Budget(ContractModel):
    """How much the compiled model may differ from the float one.

    ``min_fidelity``: agreement with the float model, per task (top-1 agreement, per-label
    agreement, mAP@0.5 against the float model's detections). ``max_accuracy_drop``: when the
    evaluation images carry labels, the real accuracy may fall by at most this much.
    """

    min_fidelity: dict[Literal["classification", "multilabel", "detection"], Fraction] = {
        "classification": 0.99, "multilabel": 0.99, "detection": 0.90,
    }
    max_accuracy_drop: Fraction = 0.01


class Memory(ContractModel):
    max_model_mb: Annotated[float, Field(gt=0)]
    max_arena_mb: Annotated[float, Field(gt=0)]


class Alternative(ContractModel):
    """A configuration the search may ship instead of a pass that misses the budget (e.g. int8
    weights with float activations instead of full int8). ``gives_up``: what it costs, said in the
    summary and the manifest when it is chosen."""

    name: Name
    config: dict[str, Any] = {}
    gives_up: Text


class PassSpec(ContractModel):
    """One pass of a target, with its config.

    ``search``: one config field and the values to try in order (e.g. pruning ratios, largest
    first); the first within budget is kept. ``optional``: skip the pass when no value fits.
    ``max_float_nodes``: for quantization, how many sensitive nodes may be kept in float.
    ``alternatives``: when the pass (with nodes kept in float) misses the budget, these are tried,
    smallest model first, and the smallest that meets the budget is shipped.
    """

    name: Name
    config: dict[str, Any] = {}
    search: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], Field(max_length=1)] = {}
    optional: bool = False
    min_fidelity: Fraction | None = None  # stricter than the budget: leave room for later passes
    max_float_nodes: Annotated[int, Field(ge=0, le=1024)] = 32
    alternatives: Annotated[list[Alternative], Field(max_length=16)] = []


class TargetProfile(ContractModel):
    name: Name
    description: Text
    board: Board
    runtime: RuntimeProfile
    precision: Literal["fp32", "fp16", "int8"]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    opset: Annotated[int, Field(ge=11, le=23)]
    budget: Budget = Budget()
    memory: Memory
    passes: Annotated[list[PassSpec], Field(min_length=1)]

    @property
    def host_threads(self) -> int:
        """Threads when latency is measured on the build host: the profile's, at most the host's cores."""
        return max(1, min(self.runtime.threads, os.cpu_count() or 1))

    @field_validator("passes")
    @classmethod
    def _passes_known(cls, passes: list[PassSpec]) -> list[PassSpec]:
        from compiler.passes import PASSES

        unknown = [p.name for p in passes if p.name not in PASSES]
        unknown += [a.name for p in passes for a in p.alternatives if a.name not in PASSES]
        if unknown:
            raise ValueError(f"unknown passes {unknown}; known: {sorted(PASSES)}")
        return passes


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A target by name (``compiler/targets/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TARGETS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise TargetError(f"unknown target {name_or_path!r}; valid targets: {', '.join(list_targets())}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TargetError(f"cannot read target profile {path}: {exc}") from exc
    try:
        return TargetProfile.model_validate(data)
    except ValidationError as exc:
        problems = "".join(f"\n  - {p}" for p in problems_of(exc))
        raise TargetError(f"target profile {path} is invalid:{problems}") from exc


def with_min_fidelity(profile: TargetProfile, min_fidelity: float | None) -> TargetProfile:
    """The profile with one fidelity floor for every task (a command-line override), or unchanged."""
    if min_fidelity is None:
        return profile
    floors = dict.fromkeys(("classification", "multilabel", "detection"), min_fidelity)
    return profile.model_copy(update={"budget": profile.budget.model_copy(update={"min_fidelity": floors})})
