"""Procedural fridge-shelf photos with multi-label ground truth and boxes.

Each scene is a fridge interior (back wall, glass shelf, door light) with a random
number of items placed along the shelf at random depths. Items further back are
smaller and drawn first, so nearer items occlude them. Every item is rendered as its
own layer with a mask, so the generator knows how much of each item stays visible;
an item hidden beyond ``min_visible`` is dropped from the scene (it would otherwise be
an unlearnable label). Photometric damage follows: lighting gradient and gain, a
colour cast, blur (Gaussian or motion) and sensor noise.

Only numpy and OpenCV are used, so the agent's simulated devices and the tests can
make photos without any training dependency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from examples.fridge.items import ITEM_PAINTERS, Layer

ITEM_KINDS: tuple[str, ...] = tuple(ITEM_PAINTERS)


@dataclass(frozen=True)
class SynthConfig:
    """How scenes are drawn. Defaults are the distribution the demo model was trained on."""

    width: int = 256
    height: int = 192
    max_items: int = 7
    empty_probability: float = 0.04
    min_visible: float = 0.4
    blur_probability: float = 0.5
    noise_sigma_max: float = 9.0
    cast_strength: float = 0.18
    occluder_probability: float = 0.15

    def __post_init__(self) -> None:
        if not 64 <= self.width <= 4096 or not 64 <= self.height <= 4096:
            raise ValueError(f"image size {self.width}x{self.height} must be within 64..4096 pixels")
        if not 0 <= self.max_items <= 32:
            raise ValueError(f"max_items={self.max_items} must be within 0..32")
        if not 0.0 <= self.min_visible < 1.0:
            raise ValueError(f"min_visible={self.min_visible} must be within [0, 1)")


@dataclass(frozen=True)
class Item:
    kind: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, of the whole item
    visible: float  # fraction of the item's pixels not hidden by nearer items


@dataclass(frozen=True)
class Shelf:
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV order)
    items: tuple[Item, ...] = field(default_factory=tuple)

    @property
    def labels(self) -> np.ndarray:
        """Multi-hot vector over ITEM_KINDS."""
        present = {item.kind for item in self.items}
        return np.array([kind in present for kind in ITEM_KINDS], dtype=np.float32)

    @property
    def inventory(self) -> dict[str, int]:
        return dict(Counter(item.kind for item in self.items))


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, int]:
    """Back wall with a vertical light gradient, side walls and a glass shelf edge."""
    wall = rng.uniform(190, 240)
    tint = rng.uniform(-8, 8, size=3)
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top_light = rng.uniform(1.0, 1.15)
    gradient = top_light - (top_light - rng.uniform(0.75, 0.95)) * ys
    img = np.clip((wall + tint)[None, None, :] * gradient * np.ones((h, w, 3), np.float32), 0, 255)
    # Side walls in perspective.
    inset = int(w * rng.uniform(0.03, 0.08))
    side = (wall * 0.8 + tint).tolist()
    cv2.fillPoly(img, [np.array([[0, 0], [inset, inset], [inset, h - inset], [0, h]])], side)
    cv2.fillPoly(img, [np.array([[w, 0], [w - inset, inset], [w - inset, h - inset], [w, h]])], side)
    shelf_y = int(h * rng.uniform(0.78, 0.9))
    img[shelf_y:] = img[shelf_y:] * 0.85 + np.array([30, 25, 15], np.float32) * 0.15
    cv2.line(img, (0, shelf_y), (w, shelf_y), (150, 160, 150), max(1, h // 96))
    # Ribs on the back wall, as real fridge liners have.
    for y in range(int(h * rng.uniform(0.05, 0.2)), shelf_y - 10, max(8, h // 8)):
        cv2.line(img, (inset, y), (w - inset, y), (wall * 0.9,) * 3, 1)
    return img, shelf_y


def _place(rng: np.random.Generator, kinds: list[str], w: int, h: int, shelf_y: int) -> list[Layer]:
    layers: list[Layer] = []
    # Depth 0 = front of the shelf, 1 = against the back wall.
    depths = sorted(rng.uniform(0.0, 1.0, size=len(kinds)), reverse=True)
    for kind, depth in zip(kinds, depths, strict=True):
        scale = h * rng.uniform(0.45, 0.7) * (1.0 - 0.35 * depth)
        base_y = shelf_y - depth * h * 0.12 + rng.uniform(-2, 2)
        cx = rng.uniform(0.1, 0.9) * w
        layers.append(ITEM_PAINTERS[kind](rng, (h, w), cx, base_y, scale, kind))
    return layers


def _occluder(rng: np.random.Generator, h: int, w: int) -> Layer:
    """A foreground thing that is not an item: a door shelf edge or a dark blob."""
    canvas = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        y0 = int(h * rng.uniform(0.7, 0.95))
        colour = rng.uniform(60, 200, size=3).tolist()
        cv2.rectangle(canvas, (0, y0), (w, h), colour, -1)
        cv2.rectangle(mask, (0, y0), (w, h), 255, -1)
    else:
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(w * rng.uniform(0.05, 0.15)), int(h * rng.uniform(0.1, 0.3)))
        colour = rng.uniform(20, 120, size=3).tolist()
        cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    return Layer("occluder", canvas, mask)


def _photometric(rng: np.random.Generator, img: Any, config: SynthConfig) -> np.ndarray:
    _h, w = img.shape[:2]
    gain = rng.uniform(0.6, 1.25)
    cast = 1.0 + rng.uniform(-config.cast_strength, config.cast_strength, size=3)
    # A door light from one side: horizontal illumination gradient.
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    side = rng.uniform(0.0, 0.35)
    light = 1.0 - side * (xs if rng.random() < 0.5 else 1.0 - xs)
    img = img * gain * cast[None, None, :] * light
    if rng.random() < config.blur_probability:
        if rng.random() < 0.7:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.6))
        else:
            length = int(rng.integers(3, 8))
            line = np.zeros((length, length), np.float32)
            line[length // 2, :] = 1.0 / length
            rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
            kernel = cv2.warpAffine(line, rot, (length, length))
            kernel = kernel * np.float32(1.0 / max(float(kernel.sum()), 1e-6))
            img = cv2.filter2D(img, -1, kernel)
    sigma = rng.uniform(0.0, config.noise_sigma_max)
    img = img + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    return np.asarray(np.clip(img, 0, 255), dtype=np.uint8)


def generate(rng: np.random.Generator, config: SynthConfig = SynthConfig()) -> Shelf:
    """Draw one fridge shelf photo."""
    h, w = config.height, config.width
    img, shelf_y = _background(rng, h, w)
    count = 0 if rng.random() < config.empty_probability else int(rng.integers(1, config.max_items + 1))
    kinds = [ITEM_KINDS[int(i)] for i in rng.integers(0, len(ITEM_KINDS), size=count)]
    layers = _place(rng, kinds, w, h, shelf_y)
    if rng.random() < config.occluder_probability:
        layers.append(_occluder(rng, h, w))
    owner = np.full((h, w), -1, np.int16)
    for index, layer in enumerate(layers):
        owner[layer.mask > 0] = index
    kept: list[Layer] = []
    for index, layer in enumerate(layers):
        area = int(np.count_nonzero(layer.mask))
        visible = int(np.count_nonzero(owner == index)) / max(area, 1)
        if layer.kind == "occluder" or visible >= config.min_visible:
            kept.append(layer)
    # Re-compose with the hidden items gone, then recompute what each one shows.
    owner.fill(-1)
    for index, layer in enumerate(kept):
        sel = layer.mask > 0
        img[sel] = layer.canvas[sel]
        owner[sel] = index
    items = []
    for index, layer in enumerate(kept):
        if layer.kind == "occluder":
            continue
        ys, xs = np.nonzero(layer.mask)
        if xs.size == 0:
            continue
        visible = int(np.count_nonzero(owner == index)) / xs.size
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        items.append(Item(layer.kind, box, round(visible, 3)))
    return Shelf(_photometric(rng, img, config), tuple(items))


def stream(seed: int, config: SynthConfig = SynthConfig()) -> Iterator[Shelf]:
    """An endless, reproducible stream of shelves."""
    rng = np.random.default_rng(seed)
    while True:
        yield generate(rng, config)


def write_dataset(
    folder: Path,
    count: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
    on_image: Callable[[int], None] | None = None,
) -> Path:
    """Write ``count`` JPEG photos and a ``labels.csv`` (file, one 0/1 column per kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file," + ",".join(ITEM_KINDS)]
    for index, shelf in zip(range(count), stream(seed, config), strict=False):
        name = f"shelf_{index:05d}.jpg"
        if not cv2.imwrite(str(folder / name), shelf.image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"could not write {folder / name}")
        rows.append(name + "," + ",".join(str(int(v)) for v in shelf.labels))
        if on_image is not None:
            on_image(index)
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels
