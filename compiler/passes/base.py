"""What a pass is: a name, a frozen typed config, and ``run(model, config, workdir) -> model``.

A model here is a path to a model file (ONNX, or ``.tflite`` after conversion). A pass
writes its output under ``workdir`` and returns the path (or returns its input path when it
has nothing to change, and the pipeline then records no step); it keeps no state between runs,
so the pipeline can re-run any pass with another config (e.g. while searching a budget).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import ConfigDict, ValidationError

from compiler.errors import PassError
from contract.base import ContractModel, problems_of


class PassConfig(ContractModel):
    """Base of every pass config: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


C = TypeVar("C", bound=PassConfig)


class Pass(Generic[C]):
    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]
    summary: ClassVar[str] = ""
    # exact in float: the output model computes what its input did (up to float rounding). The
    # pipeline then checks the outputs on a few calibration frames instead of re-evaluating.
    exact: ClassVar[bool] = False

    def run(self, model: Path, config: C, workdir: Path) -> Path:
        raise NotImplementedError

    @classmethod
    def config(cls, values: dict[str, Any]) -> C:
        try:
            return cls.Config.model_validate(values)  # type: ignore[return-value]
        except ValidationError as exc:
            problems = "".join(f"\n  - {p}" for p in problems_of(exc))
            raise PassError(f"invalid config for pass {cls.name}:{problems}") from exc


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger for
    every call; the pipeline already does that pre-processing, so the advice is silenced."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
