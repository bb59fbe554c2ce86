"""Inventory changes between captures: sequences of results, then NanoDet on real grocery photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.inventory import Changes, InventoryTracker
from agent.model import LoadedModel
from agent.postprocess import Detection, Prediction
from compiler.description import load_description
from compiler.iospec import io_for

LABELS = ["milk", "cheese", "butter"]
NANODET_DESCRIPTION = Path(__file__).parents[2] / "examples" / "nanodet" / "model.yaml"


def multilabel(*scores: float) -> Prediction:
    return Prediction(tuple(Detection(label, s) for label, s in zip(LABELS, scores, strict=True) if s >= 0.5),
                      np.array(scores, np.float32))


def boxes(*found: tuple[str, float]) -> Prediction:
    return Prediction(tuple(Detection(label, s, (0.0, 0.0, 1.0, 1.0)) for label, s in found),
                      np.zeros(len(LABELS), np.float32))


def summary(changes: Changes | None) -> tuple[dict[str, int], dict[str, int]] | None:
    if changes is None:
        return None
    return {c.label: c.count for c in changes.added}, {c.label: c.count for c in changes.removed}


def test_multilabel_items_come_and_go_past_the_band_only() -> None:
    t = InventoryTracker(enter=0.6, exit=0.3)
    assert summary(t.update("door", multilabel(0.9, 0.1, 0.55), LABELS)) == ({"milk": 1}, {})  # butter below enter
    assert t.update("door", multilabel(0.4, 0.2, 0.59), LABELS) is None  # milk in the band: still there
    assert t.update("door", multilabel(0.35, 0.5, 0.2), LABELS) is None  # noise either side of one threshold
    changes = t.update("door", multilabel(0.1, 0.7, 0.2), LABELS)
    assert summary(changes) == ({"cheese": 1}, {"milk": 1})
    assert changes is not None
    (removed,) = changes.removed
    assert removed.score == pytest.approx(0.1) and removed.total == 0
    (added,) = changes.added
    assert added.score == pytest.approx(0.7) and added.total == 1


def test_a_score_flickering_around_one_threshold_does_not_flap() -> None:
    flicker = [0.52, 0.48, 0.51, 0.47, 0.53, 0.49]
    banded, bare = InventoryTracker(0.5, 0.35), InventoryTracker(0.5, 0.5)
    banded_changes = [banded.update("s", multilabel(s, 0, 0), LABELS) for s in flicker]
    bare_changes = [bare.update("s", multilabel(s, 0, 0), LABELS) for s in flicker]
    assert sum(c is not None for c in banded_changes) == 1  # added once, never removed
    assert sum(c is not None for c in bare_changes) == len(flicker)  # without a band: every capture flaps


def test_detections_compare_counts_per_label() -> None:
    t = InventoryTracker(enter=0.5, exit=0.3)
    assert summary(t.update("s", boxes(("bottle", 0.8), ("bottle", 0.7), ("cup", 0.6)), LABELS)) == \
        ({"bottle": 2, "cup": 1}, {})
    assert t.update("s", boxes(("bottle", 0.8), ("bottle", 0.4), ("cup", 0.35)), LABELS) is None  # weak, not gone
    assert summary(t.update("s", boxes(("bottle", 0.8), ("bottle", 0.7), ("bottle", 0.6)), LABELS)) == \
        ({"bottle": 1}, {"cup": 1})
    changes = t.update("s", boxes(("bottle", 0.9)), LABELS)
    assert summary(changes) == ({}, {"bottle": 2})
    assert changes is not None and changes.removed[0].total == 1


def test_sources_are_kept_apart_and_bounded() -> None:
    t = InventoryTracker(0.5, 0.3, max_sources=2)
    t.update("a", boxes(("cup", 0.9)), LABELS)
    assert summary(t.update("b", boxes(), LABELS)) is None  # b's first capture: empty, nothing to say
    assert t.update("a", boxes(("cup", 0.9)), LABELS) is None
    t.update("c", boxes(), LABELS)  # a third source: the least recently seen (b) is forgotten
    assert set(t.held) == {"a", "c"}
    t.reset()
    assert summary(t.update("a", boxes(("cup", 0.9)), LABELS)) == ({"cup": 1}, {})
    with pytest.raises(ValueError, match="exit threshold"):
        InventoryTracker(enter=0.3, exit=0.5)


# ---- NanoDet on real photos ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def nanodet(shared_data: Path) -> LoadedModel:
    """NanoDet through the agent's one path (preprocess -> runtime -> nanodet postprocessor)."""
    model = shared_data / "nanodet" / "object_detection_nanodet_2022nov.onnx"
    return LoadedModel.open(model, io_for(model, load_description(NANODET_DESCRIPTION)), "onnxruntime", 2)


def _photo(shared_data: Path, name: str) -> np.ndarray:
    frame = cv2.imread(str(shared_data / "grocery" / "val" / name))
    assert frame is not None, name
    return frame


def test_real_photos_one_after_another_give_coco_items_added_and_removed(nanodet: LoadedModel,
                                                                         shared_data: Path) -> None:
    t = InventoryTracker(enter=0.45, exit=0.38)
    sequence = ["Fruit/Orange/Orange_001.jpg", "Fruit/Banana/Banana_001.jpg",
                "Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg", "Vegetables/Carrots/Carrots_005.jpg"]
    seen = [summary(t.update("shelf", nanodet.predict(_photo(shared_data, name)).prediction, nanodet.io.labels))
            for name in sequence]
    oranges, bananas, apples = (seen[0] or ({}, {}))[0]["orange"], (seen[1] or ({}, {}))[0]["banana"], \
        (seen[2] or ({}, {}))[0]["apple"]
    assert seen[0] == ({"orange": oranges}, {}) and oranges >= 5  # a shop crate of oranges
    assert seen[1] == ({"banana": bananas}, {"orange": oranges})  # oranges out, bananas in
    assert seen[2] == ({"apple": apples}, {"banana": bananas})  # the 0.43 orange on the apples stays out
    assert seen[3] == ({}, {"apple": apples})  # carrots score 0.44 at best: below enter, not claimed
    assert t.update("shelf", nanodet.predict(_photo(shared_data, sequence[0])).prediction, nanodet.io.labels) \
        is not None


def test_sensor_noise_on_a_real_photo_does_not_flap(nanodet: LoadedModel, shared_data: Path) -> None:
    """The same crate of oranges, five captures with pixel noise: NanoDet's scores near the
    threshold wander; with the band the count settles, without it items come and go."""
    photo = _photo(shared_data, "Fruit/Orange/Orange_001.jpg")
    rng = np.random.default_rng(1)
    captures = [photo] + [np.clip(photo.astype(np.int16) + rng.integers(-8, 9, photo.shape), 0, 255)
                          .astype(np.uint8) for _ in range(4)]
    predictions = [nanodet.predict(frame).prediction for frame in captures]
    banded, bare = InventoryTracker(0.45, 0.38), InventoryTracker(0.45, 0.45)
    banded_seen = [banded.update("s", p, nanodet.io.labels) for p in predictions]
    bare_seen = [bare.update("s", p, nanodet.io.labels) for p in predictions]
    assert all(c is None or not c.removed for c in banded_seen)  # an orange never "leaves" a still crate
    assert banded_seen[-3:] == [None, None, None]
    assert any(c is not None and c.removed for c in bare_seen)  # without the band, one did
