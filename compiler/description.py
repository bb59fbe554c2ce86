"""The model description (``model.yaml``): what the compiler cannot read from the graph.

Which input the frames feed, how a frame becomes that input, what the task is, the
labels, and which postprocessor turns outputs into predictions. It becomes the
manifest's ``io`` section. Example: ``examples/fridge/model/model.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError

from compiler.errors import DescriptionError
from contract.base import ContractModel, Label, Name, problems_of
from contract.manifest import Layout, Postprocessor, Preprocessing, Task

DESCRIPTION_SCHEMA = "coldchain.model-description/v1"


class InputDescription(ContractModel):
    name: Name
    layout: Layout = Layout.NCHW


class ModelDescription(ContractModel):
    schema_: Literal["coldchain.model-description/v1"] = Field(alias="schema")
    name: Name
    summary: Annotated[str, Field(max_length=2048)] = ""
    task: Task
    input: InputDescription
    preprocessing: Preprocessing
    labels: Annotated[list[Label], Field(min_length=1)]
    postprocessor: Postprocessor


def load_description(path: Path) -> ModelDescription:
    """Read and validate a description file, naming every problem in the error."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise DescriptionError(
            f"model description {path} does not exist: write one (see examples/fridge/model/model.yaml)"
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise DescriptionError(f"cannot read model description {path}: {exc}") from exc
    return parse_description(data, str(path))


def parse_description(data: object, where: str) -> ModelDescription:
    if not isinstance(data, dict):
        raise DescriptionError(f"model description {where} must be a YAML mapping")
    try:
        return ModelDescription.model_validate(data)
    except ValidationError as exc:
        problems = "".join(f"\n  - {p}" for p in problems_of(exc))
        raise DescriptionError(f"model description {where} is invalid:{problems}") from exc
