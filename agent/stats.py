"""Per-frame input statistics a device reports and the compiler profiles for drift detection.

All in 8-bit units (0..255): brightness = mean of the grey image, contrast = its standard
deviation, saturation = mean of HSV saturation. Fixed histogram edges, so device windows
and the manifest's reference profile are comparable bin by bin.

They are taken from what the model sees (``agent.preprocess.Letterbox.seen``: the frame resized
and cropped, without letterbox padding), shrunk to a 64x64 thumbnail: bilinear to 128x128, then
2x2 area averaging. The agent has that image already, so the statistics of every frame cost about
10 us instead of the 60-270 us an area resize of the whole frame took (issue 14). On the 296
grocery photos and the demo's shelves the values move by less than a unit on average from that
earlier definition (PSI between the two below 0.005; the drift gate's limit is 0.25), so reference
profiles of older bundles stay comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


THUMBNAIL = 64


def thumbnail(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """64x64 BGR: bilinear to 128x128 (a no-op for a 128x128 model input), then 2x2 area averaging."""
    if image.shape[:2] != (2 * THUMBNAIL, 2 * THUMBNAIL):
        image = np.asarray(cv2.resize(image, (2 * THUMBNAIL, 2 * THUMBNAIL), interpolation=cv2.INTER_LINEAR), np.uint8)
    return np.asarray(cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA), np.uint8)


def frame_values(seen: npt.NDArray[np.uint8]) -> tuple[float, float, float]:
    """Brightness, contrast and saturation (``INPUT_STATISTICS``' order) of an image as the model sees it
    (``Letterbox.seen``): what a telemetry window records per frame, as three floats, no dict."""
    small = thumbnail(seen)
    mean, std = cv2.meanStdDev(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    return float(mean[0, 0]), float(std[0, 0]), float(cv2.mean(cv2.cvtColor(small, cv2.COLOR_BGR2HSV))[1])


def frame_stats(seen: npt.NDArray[np.uint8]) -> dict[str, float]:
    """:func:`frame_values` by name."""
    return dict(zip(INPUT_STATISTICS, frame_values(seen), strict=True))


def histogram(values: Iterable[float], edges: list[float]) -> Histogram:
    clipped = np.clip(np.fromiter(values, np.float64), edges[0], np.nextafter(edges[-1], edges[0]))
    counts, _ = np.histogram(clipped, bins=np.asarray(edges))
    return Histogram(edges=edges, counts=[int(c) for c in counts])


def input_histograms(stats: Sequence[Mapping[str, float]]) -> dict[str, Histogram]:
    """The histograms of per-frame statistics given frame by frame (the compiler's reference profile)."""
    return column_histograms({name: [s[name] for s in stats] for name in INPUT_STATISTICS})


def column_histograms(columns: Mapping[str, Iterable[float]]) -> dict[str, Histogram]:
    """The histograms of per-frame statistics given statistic by statistic (a telemetry window's)."""
    return {name: histogram(columns[name], EDGES[name]) for name in INPUT_STATISTICS}
