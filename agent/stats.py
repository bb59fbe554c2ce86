"""Per-frame input statistics a device reports and the compiler profiles for drift detection.

All in 8-bit units (0..255): brightness = mean of the grey image, contrast = its standard
deviation, saturation = mean of HSV saturation. Fixed histogram edges, so device windows
and the manifest's reference profile are comparable bin by bin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from contract.common import Histogram
from contract.telemetry import INPUT_STATISTICS

if TYPE_CHECKING:
    import cv2
    import numpy as np
    import numpy.typing as npt
else:
    from agent.lazy import lazy

    cv2 = lazy("cv2")
    np = lazy("numpy")

EDGES: dict[str, list[float]] = {
    "brightness": [float(x) for x in range(0, 257, 16)],
    "contrast": [float(x) for x in range(0, 129, 8)],
    "saturation": [float(x) for x in range(0, 257, 16)],
}
SCORE_EDGES = [i / 20 for i in range(21)]


def frame_stats(frame: npt.NDArray[np.uint8]) -> dict[str, float]:
    small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA) if frame.shape[0] > 64 else frame
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    return {"brightness": float(grey.mean()), "contrast": float(grey.std()), "saturation": float(hsv[..., 1].mean())}


def histogram(values: Iterable[float], edges: list[float]) -> Histogram:
    clipped = np.clip(np.fromiter(values, np.float64), edges[0], np.nextafter(edges[-1], edges[0]))
    counts, _ = np.histogram(clipped, bins=np.asarray(edges))
    return Histogram(edges=edges, counts=[int(c) for c in counts])


def input_histograms(stats: list[dict[str, float]]) -> dict[str, Histogram]:
    return {name: histogram((s[name] for s in stats), EDGES[name]) for name in INPUT_STATISTICS}
