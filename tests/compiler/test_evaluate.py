from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.errors import CalibrationError
from compiler.evaluate import load_images, split
from contract.manifest import Task
from examples.fridge.synth import ITEM_KINDS, write_dataset


def test_labels_and_unreadable_images(tmp_path: Path) -> None:
    write_dataset(tmp_path, 6, seed=1)
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "labels.csv").write_text((tmp_path / "labels.csv").read_text() + "zero.jpg" + ",0" * 8 + "\n")
    images = load_images(tmp_path, list(ITEM_KINDS), Task.MULTILABEL, "evaluation")
    assert len(images.paths) == 6 and list(images.skipped.values()) == ["not a decodable image"]
    assert images.truth is not None and images.truth.shape == (6, 8)
    first, rest = split(images, 2, seed=0)
    assert len(first.paths) == 2 and len(rest.paths) == 4 and not set(first.paths) & set(rest.paths)
    assert first.truth is not None and np.array_equal(first.truth, images.truth[[images.paths.index(p)
                                                                                 for p in first.paths]])


def test_classification_labels_need_file_label_columns(tmp_path: Path) -> None:
    write_dataset(tmp_path, 3, seed=1)  # writes a multi-label table
    with pytest.raises(CalibrationError, match="must be 'file,label'"):
        load_images(tmp_path, list(ITEM_KINDS), Task.CLASSIFICATION, "evaluation")
    rows = ["file,label"] + [f"shelf_{i:05d}.jpg,apple" for i in range(3)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    images = load_images(tmp_path, list(ITEM_KINDS), Task.CLASSIFICATION, "evaluation")
    assert images.truth is not None and images.truth.tolist() == [4, 4, 4]
    (tmp_path / "labels.csv").write_text("file,label\nshelf_00000.jpg,durian\n")
    with pytest.raises(CalibrationError, match="no row for 2 images"):
        load_images(tmp_path, list(ITEM_KINDS), Task.CLASSIFICATION, "evaluation")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_images(tmp_path / "nope", ["a"], Task.CLASSIFICATION, "calibration")


def test_prepared_inputs_keep_no_placed_images(tmp_path: Path) -> None:
    """The evaluation set caches each image's input and placement, not the placed image as well (the
    agent's input statistics use it; in the compiler it would double the cache: 0.5 MB per NanoDet image)."""
    from contract.manifest import Preprocessing

    write_dataset(tmp_path, 3, seed=2)
    images = load_images(tmp_path, list(ITEM_KINDS), Task.MULTILABEL, "evaluation")
    spec = Preprocessing(resize="letterbox", width=64, height=64, color="RGB")
    feeds, places = images.inputs(spec, "image")
    assert len(feeds) == 3 and feeds[0]["image"].shape == (1, 3, 64, 64)
    assert all(p.seen is None and p.scale > 0 for p in places)
