from __future__ import annotations

import numpy as np
import pytest

from agent.errors import FrameError, ProcessingError
from agent.preprocess import check_frame, preprocess
from contract.manifest import Layout, Preprocessing, Quantization


def _frame(h: int = 60, w: int = 80) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = 10  # B
    frame[..., 1] = 20  # G
    frame[..., 2] = 30  # R
    return frame


def test_resize_rgb_mean_std_nchw() -> None:
    spec = Preprocessing(resize="resize", width=32, height=16, color="RGB", mean=[0, 10, 20], std=[2, 2, 2])
    x, _ = preprocess(_frame(), spec)
    assert x.shape == (1, 3, 16, 32) and x.dtype == np.float32
    assert np.allclose(x[0, :, 5, 5], [(30 - 0) / 2, (20 - 10) / 2, (10 - 20) / 2])


def test_letterbox_bgr_nhwc_keeps_aspect_and_centres() -> None:
    spec = Preprocessing(resize="letterbox", width=100, height=100, color="BGR", layout=Layout.NHWC, pad_value=0)
    x, placement = preprocess(_frame(50, 100), spec)
    assert x.shape == (1, 100, 100, 3)
    assert placement.scale == 1.0 and placement.pad_y == 25 and placement.pad_x == 0
    assert np.all(x[0, :25] == 0) and np.all(x[0, 75:] == 0)
    assert np.allclose(x[0, 50, 50], [10, 20, 30])


def test_uint8_input_passes_pixels_through() -> None:
    spec = Preprocessing(resize="resize", width=8, height=8, color="RGB", layout=Layout.NHWC, dtype="uint8")
    x, _ = preprocess(_frame(), spec)
    assert x.dtype == np.uint8 and x[0, 0, 0].tolist() == [30, 20, 10]


def test_quantized_int8_input() -> None:
    spec = Preprocessing(resize="resize", width=4, height=4, color="RGB", mean=[0, 0, 0], std=[255, 255, 255],
                         dtype="int8", quantization=Quantization(scale=1 / 255, zero_point=-128))
    x, _ = preprocess(_frame(), spec)
    assert x.dtype == np.int8
    assert x[0, :, 0, 0].tolist() == [30 - 128, 20 - 128, 10 - 128]
    bad = spec.model_copy(update={"quantization": None})
    with pytest.raises(ProcessingError, match="needs quantization"):
        preprocess(_frame(), bad)


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.zeros((4, 4, 3), np.float64), "depth"),
    ],
)
def test_bad_frames_name_their_kind(frame: np.ndarray, kind: str) -> None:
    with pytest.raises(FrameError) as info:
        check_frame(frame)
    assert info.value.kind == kind


def test_grey_bgra_and_16_bit_frames_are_converted() -> None:
    assert check_frame(np.full((4, 4), 7, np.uint8)).shape == (4, 4, 3)
    assert check_frame(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    assert check_frame(np.full((4, 4, 3), 256 * 200, np.uint16))[0, 0, 0] == 200
