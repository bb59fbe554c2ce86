from __future__ import annotations

from pathlib import Path

import pytest

from compiler.description import load_description
from compiler.errors import DescriptionError
from examples.fridge import DESCRIPTION_FILE


def test_demo_description_loads() -> None:
    description = load_description(DESCRIPTION_FILE)
    assert description.preprocessing.color == "RGB"
    assert description.postprocessor.name == "multilabel"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DescriptionError, match="does not exist"):
        load_description(tmp_path / "model.yaml")


def test_every_problem_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    text = DESCRIPTION_FILE.read_text().replace("task: multilabel", "task: segmentation")
    text = text.replace("color: RGB", "color: CMYK")
    path.write_text(text)
    with pytest.raises(DescriptionError) as info:
        load_description(path)
    assert "task:" in str(info.value) and "preprocessing.color:" in str(info.value)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(DescriptionError, match="mapping"):
        load_description(path)
