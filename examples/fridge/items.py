"""Painters for the eight fridge items.

Each painter draws one item on its own full-size layer (colour canvas + mask), with the
item's base centred at ``(cx, base_y)`` and its height proportional to ``scale``. Shapes,
colours, shading and labels vary per call so that a model must learn the kind, not one
drawing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Layer:
    kind: str
    canvas: np.ndarray  # H x W x 3 float32, BGR
    mask: np.ndarray  # H x W uint8, 255 where the item is


class _Pen:
    """Draws the same shape on the colour canvas and on the mask."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.canvas = np.zeros((*shape, 3), np.float32)
        self.mask = np.zeros(shape, np.uint8)

    def poly(self, pts: list[tuple[float, float]], colour: Colour, mask: bool = True) -> None:
        arr = np.round(np.array(pts)).astype(np.int32)
        cv2.fillPoly(self.canvas, [arr], colour, lineType=cv2.LINE_AA)
        if mask:
            cv2.fillPoly(self.mask, [arr], 255)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, mask: bool = True) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour, mask)

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, colour: Colour, mask: bool = True, angle: float = 0.0
    ) -> None:
        centre, axes = (round(cx), round(cy)), (max(1, round(rx)), max(1, round(ry)))
        cv2.ellipse(self.canvas, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        if mask:
            cv2.ellipse(self.mask, centre, axes, angle, 0, 360, 255, -1)

    def line(self, p0: tuple[float, float], p1: tuple[float, float], colour: Colour, width: int) -> None:
        a, b = (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1]))
        cv2.line(self.canvas, a, b, colour, max(1, width), cv2.LINE_AA)
        cv2.line(self.mask, a, b, 255, max(1, width))

    def shade(self, x0: float, x1: float, strength: float, highlight: float) -> None:
        """Cylindrical shading across x: darker at the edges, a highlight stripe."""
        w = self.canvas.shape[1]
        xs = (np.arange(w, dtype=np.float32) - x0) / max(x1 - x0, 1.0)
        profile = 1.0 - strength * (2.0 * np.clip(xs, 0, 1) - 1.0) ** 2
        profile += highlight * np.exp(-(((xs - 0.3) / 0.08) ** 2))
        self.canvas *= profile[None, :, None]

    def layer(self, kind: str) -> Layer:
        return Layer(kind, np.clip(self.canvas, 0, 255), self.mask)


Painter = Callable[[np.random.Generator, tuple[int, int], float, float, float, str], Layer]


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 18.0) -> Colour:
    c = np.clip(np.array(colour) + rng.uniform(-amount, amount, size=3), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _pick(rng: np.random.Generator, colours: list[Colour]) -> Colour:
    return _jitter(rng, colours[int(rng.integers(0, len(colours)))])


def _text_lines(pen: _Pen, rng: np.random.Generator, x0: float, x1: float, y: float, n: int, gap: float) -> None:
    ink = _pick(rng, [(40, 40, 40), (120, 40, 20), (30, 30, 140)])
    for i in range(n):
        length = (x1 - x0) * rng.uniform(0.4, 0.9)
        pen.line((x0, y + i * gap), (x0 + length, y + i * gap), ink, 1)


def milk_carton(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    w, h = s * rng.uniform(0.32, 0.42), s * rng.uniform(0.8, 1.0)
    body = _pick(rng, [(245, 245, 245), (235, 240, 250), (225, 235, 240)])
    x0, x1, top = cx - w / 2, cx + w / 2, by - h
    pen.rect(x0, top, x1, by, body)
    gable = h * rng.uniform(0.12, 0.18)
    pen.poly([(x0, top), (cx, top - gable), (x1, top)], _jitter(rng, body, 10))
    pen.rect(cx - w * 0.08, top - gable - h * 0.05, cx + w * 0.08, top - gable + 2, body)
    band = _pick(rng, [(200, 90, 20), (40, 40, 200), (40, 150, 40), (200, 60, 140)])
    band_y = top + h * rng.uniform(0.3, 0.5)
    pen.rect(x0, band_y, x1, band_y + h * rng.uniform(0.12, 0.22), band, mask=False)
    _text_lines(pen, rng, x0 + w * 0.1, x1 - w * 0.1, by - h * 0.2, 3, max(2.0, h * 0.05))
    pen.shade(x0, x1, 0.25, 0.0)
    return pen.layer(kind)


def bottle(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    w, h = s * rng.uniform(0.2, 0.28), s * rng.uniform(0.65, 0.8)
    glass = _pick(rng, [(40, 120, 40), (20, 60, 110), (200, 190, 170), (160, 110, 60)])
    x0, x1, shoulder = cx - w / 2, cx + w / 2, by - h
    pen.rect(x0, shoulder, x1, by, glass)
    neck_w, neck_h = w * rng.uniform(0.3, 0.42), s * rng.uniform(0.25, 0.35)
    pen.poly([(x0, shoulder), (cx - neck_w / 2, shoulder - neck_h * 0.4), (cx + neck_w / 2, shoulder - neck_h * 0.4),
              (x1, shoulder)], glass)
    pen.rect(cx - neck_w / 2, shoulder - neck_h, cx + neck_w / 2, shoulder - neck_h * 0.35, glass)
    cap = _pick(rng, [(30, 30, 200), (200, 200, 200), (20, 180, 220), (40, 40, 40)])
    pen.rect(cx - neck_w * 0.6, shoulder - neck_h - s * 0.05, cx + neck_w * 0.6, shoulder - neck_h, cap)
    label = _pick(rng, [(230, 230, 230), (60, 200, 230), (200, 80, 60)])
    ly = by - h * rng.uniform(0.55, 0.7)
    pen.rect(x0, ly, x1, ly + h * 0.3, label, mask=False)
    pen.shade(x0, x1, 0.45, rng.uniform(0.2, 0.5))
    return pen.layer(kind)


def can(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    w, h = s * rng.uniform(0.24, 0.3), s * rng.uniform(0.42, 0.5)
    colour = _pick(rng, [(30, 30, 200), (160, 60, 20), (190, 190, 190), (30, 160, 220), (40, 140, 40)])
    x0, x1, top = cx - w / 2, cx + w / 2, by - h
    rim = (200.0, 200.0, 205.0)
    pen.rect(x0, top, x1, by, colour)
    pen.ellipse(cx, by, w / 2, w * 0.12, colour)
    pen.ellipse(cx, top, w / 2, w * 0.12, rim)
    pen.ellipse(cx, top, w * 0.38, w * 0.08, (150, 150, 155))
    pen.rect(x0, top + h * 0.05, x1, top + h * 0.1, rim, mask=False)
    pen.rect(x0, by - h * 0.1, x1, by - h * 0.05, rim, mask=False)
    logo = _pick(rng, [(240, 240, 240), (20, 20, 20), (0, 215, 255)])
    pen.ellipse(cx, top + h * 0.5, w * 0.3, h * 0.14, logo, mask=False)
    pen.shade(x0, x1, 0.55, rng.uniform(0.4, 0.7))
    return pen.layer(kind)


def egg_box(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    w, h = s * rng.uniform(0.75, 0.95), s * rng.uniform(0.25, 0.32)
    pulp = _pick(rng, [(170, 180, 185), (150, 190, 215), (200, 170, 140), (175, 205, 190)], )
    x0, x1, top = cx - w / 2, cx + w / 2, by - h
    pen.poly([(x0 + w * 0.04, by), (x0, top), (x1, top), (x1 - w * 0.04, by)], pulp)
    bumps = int(rng.integers(3, 7))
    r = w / (2 * bumps)
    dark = tuple(c * 0.8 for c in pulp)
    for i in range(bumps):
        bx = x0 + r * (2 * i + 1)
        pen.ellipse(bx, top, r * 0.92, r * 0.7, pulp)
        pen.ellipse(bx, top + h * 0.55, r * 0.5, h * 0.25, (dark[0], dark[1], dark[2]), mask=False)
    pen.line((x0, top + h * 0.2), (x1, top + h * 0.2), (dark[0], dark[1], dark[2]), 1)
    if rng.random() < 0.6:
        label = _pick(rng, [(240, 240, 240), (90, 200, 240), (90, 170, 90)])
        pen.rect(cx - w * 0.18, top + h * 0.3, cx + w * 0.18, by - h * 0.15, label, mask=False)
    return pen.layer(kind)


def _round_fruit(pen: _Pen, rng: np.random.Generator, cx: float, by: float, r: float, squash: float,
                 colour: Colour) -> tuple[float, float]:
    cy = by - r * squash
    pen.ellipse(cx, cy, r, r * squash, colour)
    hx, hy = cx - r * 0.35, cy - r * squash * 0.35
    highlight = tuple(min(255.0, c * 1.35 + 25) for c in colour)
    pen.ellipse(hx, hy, r * 0.22, r * 0.16, (highlight[0], highlight[1], highlight[2]), mask=False)
    shadow = tuple(c * 0.65 for c in colour)
    pen.ellipse(cx + r * 0.35, cy + r * squash * 0.4, r * 0.45, r * 0.3, (shadow[0], shadow[1], shadow[2]),
                mask=False)
    return cy, cy - r * squash


def apple(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    r = s * rng.uniform(0.14, 0.19)
    colour = _pick(rng, [(40, 40, 190), (30, 60, 170), (60, 190, 130), (40, 150, 200), (50, 70, 150)])
    _cy, top = _round_fruit(pen, rng, cx, by, r, rng.uniform(0.88, 1.0), colour)
    dimple = tuple(c * 0.6 for c in colour)
    pen.ellipse(cx, top + r * 0.12, r * 0.25, r * 0.08, (dimple[0], dimple[1], dimple[2]), mask=False)
    lean = rng.uniform(-0.25, 0.25) * r
    pen.line((cx, top + r * 0.1), (cx + lean, top - r * 0.35), (30, 60, 90), max(1, int(r * 0.12)))
    if rng.random() < 0.5:
        pen.ellipse(cx + lean + r * 0.25, top - r * 0.25, r * 0.25, r * 0.1, (40, 150, 60), angle=-30)
    return pen.layer(kind)


def tomato(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    r = s * rng.uniform(0.13, 0.18)
    colour = _pick(rng, [(30, 30, 225), (20, 50, 235), (30, 70, 215)])
    _cy, top = _round_fruit(pen, rng, cx, by, r, rng.uniform(0.72, 0.85), colour)
    calyx = _jitter(rng, (40, 140, 40), 20)
    points = int(rng.integers(5, 7))
    phase = rng.uniform(0, 2 * np.pi)
    for i in range(points):
        angle = phase + 2 * np.pi * i / points
        tip = (cx + np.cos(angle) * r * 0.45, top + r * 0.12 + np.sin(angle) * r * 0.18)
        pen.line((cx, top + r * 0.1), tip, calyx, max(1, int(r * 0.12)))
    pen.ellipse(cx, top + r * 0.08, r * 0.1, r * 0.07, calyx)
    return pen.layer(kind)


def cheese_block(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    w, h = s * rng.uniform(0.45, 0.62), s * rng.uniform(0.22, 0.32)
    colour = _pick(rng, [(60, 200, 240), (40, 170, 235), (110, 215, 245)])
    x0, x1, top = cx - w / 2, cx + w / 2, by - h
    if rng.random() < 0.5:  # wedge
        pen.poly([(x0, by), (x0, top), (x1, by - h * 0.25), (x1, by)], colour)
    else:  # block with a darker top face
        pen.rect(x0, top, x1, by, colour)
        face = tuple(min(255.0, c * 1.15) for c in colour)
        pen.poly([(x0, top), (x0 + w * 0.15, top - h * 0.3), (x1 + w * 0.05, top - h * 0.3), (x1, top)],
                 (face[0], face[1], face[2]))
    rind = tuple(c * 0.7 for c in colour)
    pen.rect(x0, by - h * 0.12, x1, by, (rind[0], rind[1], rind[2]), mask=False)
    hole = tuple(c * 0.72 for c in colour)
    for _ in range(int(rng.integers(2, 6))):
        hx, hy = rng.uniform(x0 + w * 0.1, x0 + w * 0.6), rng.uniform(by - h * 0.8, by - h * 0.25)
        pen.ellipse(hx, hy, h * rng.uniform(0.06, 0.12), h * rng.uniform(0.05, 0.1), (hole[0], hole[1], hole[2]),
                    mask=False)
    return pen.layer(kind)


def yoghurt_cup(rng: np.random.Generator, shape: tuple[int, int], cx: float, by: float, s: float, kind: str) -> Layer:
    pen = _Pen(shape)
    top_w, h = s * rng.uniform(0.26, 0.34), s * rng.uniform(0.26, 0.34)
    bottom_w = top_w * rng.uniform(0.7, 0.82)
    body = _pick(rng, [(245, 245, 245), (210, 190, 245), (200, 230, 245), (215, 245, 220)])
    top = by - h
    pen.poly([(cx - bottom_w / 2, by), (cx - top_w / 2, top), (cx + top_w / 2, top), (cx + bottom_w / 2, by)], body)
    lid = _pick(rng, [(200, 200, 205), (60, 60, 220), (220, 120, 50), (180, 90, 200)])
    pen.ellipse(cx, top, top_w / 2 + 1, top_w * 0.13, lid)
    pen.rect(cx - top_w / 2, top + h * 0.02, cx + top_w / 2, top + h * 0.08, lid, mask=False)
    fruit = _pick(rng, [(60, 60, 200), (60, 200, 240), (150, 60, 120), (60, 160, 60)])
    pen.ellipse(cx, top + h * 0.55, top_w * 0.2, h * 0.16, fruit, mask=False)
    pen.shade(cx - top_w / 2, cx + top_w / 2, 0.3, 0.1)
    return pen.layer(kind)


ITEM_PAINTERS: dict[str, Painter] = {
    "milk_carton": milk_carton,
    "bottle": bottle,
    "can": can,
    "egg_box": egg_box,
    "apple": apple,
    "tomato": tomato,
    "cheese_block": cheese_block,
    "yoghurt_cup": yoghurt_cup,
}
