from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from examples.fridge.synth import ITEM_KINDS, SynthConfig, generate, stream, write_dataset


def test_eight_item_kinds() -> None:
    assert len(ITEM_KINDS) == 8
    assert {"milk_carton", "bottle", "can", "egg_box", "apple", "tomato", "cheese_block", "yoghurt_cup"} == set(
        ITEM_KINDS
    )


def test_reproducible_for_a_seed() -> None:
    a, b = next(stream(7)), next(stream(7))
    assert np.array_equal(a.image, b.image)
    assert a.items == b.items
    assert not np.array_equal(a.image, next(stream(8)).image)


def test_ground_truth_is_consistent() -> None:
    config = SynthConfig()
    seen_kinds: set[str] = set()
    counts = []
    for shelf in (generate(np.random.default_rng(i)) for i in range(120)):
        assert shelf.image.shape == (config.height, config.width, 3)
        assert shelf.image.dtype == np.uint8
        counts.append(len(shelf.items))
        for item in shelf.items:
            x0, y0, x1, y1 = item.box
            assert 0 <= x0 < x1 <= config.width and 0 <= y0 < y1 <= config.height
            assert item.visible >= config.min_visible
            seen_kinds.add(item.kind)
        labels = shelf.labels
        assert labels.shape == (8,)
        assert {ITEM_KINDS[i] for i in np.flatnonzero(labels)} == {it.kind for it in shelf.items}
        assert sum(shelf.inventory.values()) == len(shelf.items)
    assert seen_kinds == set(ITEM_KINDS)
    assert max(counts) >= 4 and min(counts) <= 1  # random counts per shelf
    assert any(it.visible < 0.95 for s in (generate(np.random.default_rng(i)) for i in range(60)) for it in s.items)


def test_photometric_variety() -> None:
    means = [next(stream(i)).image.mean(axis=(0, 1)) for i in range(30)]
    brightness = [m.mean() for m in means]
    assert max(brightness) - min(brightness) > 30  # lighting varies
    casts = [m.max() - m.min() for m in means]
    assert max(casts) > 15  # colour casts


def test_write_dataset(tmp_path: Path) -> None:
    labels = write_dataset(tmp_path / "set", 5, seed=3)
    rows = labels.read_text().splitlines()
    assert rows[0] == "file," + ",".join(ITEM_KINDS)
    assert len(rows) == 6
    image = cv2.imread(str(tmp_path / "set" / rows[1].split(",")[0]))
    assert image is not None and image.shape == (192, 256, 3)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="image size"):
        SynthConfig(width=10)
    with pytest.raises(ValueError, match="min_visible"):
        SynthConfig(min_visible=1.5)
