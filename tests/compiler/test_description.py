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


def test_imagenet_preprocessing_is_describable(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    text = DESCRIPTION_FILE.read_text().replace("resize: resize ", "resize: short_side\n  short_side: 146\n"
                                                "  crop: center\n  interpolation: cubic\n ")
    path.write_text(text)
    pre = load_description(path).preprocessing
    assert (pre.resize, pre.short_side, pre.crop, pre.interpolation) == ("short_side", 146, "center", "cubic")


def test_a_crop_larger_than_the_resized_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(DESCRIPTION_FILE.read_text().replace("resize: resize ", "resize: short_side\n  short_side: 100\n"
                                                         "  crop: center\n "))
    with pytest.raises(DescriptionError) as info:
        load_description(path)
    assert "preprocessing:" in str(info.value) and "short_side 100" in str(info.value) and "128x128" in str(info.value)
