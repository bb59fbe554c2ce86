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


# ---- issue 15: the resize and crop of common model zoos, each against a hand-computed expectation -----------------

def _blocks(h: int, w: int) -> np.ndarray:
    """A frame constant over 2x2 blocks: B = block column, G = block row, R = 7. Halving it with
    INTER_LINEAR (or INTER_AREA) gives exactly B = x, G = y at output pixel (x, y)."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = (np.arange(w) // 2)[None, :]
    frame[..., 1] = (np.arange(h) // 2)[:, None]
    frame[..., 2] = 7
    return frame


def test_short_side_then_centre_crop() -> None:
    # torchvision's ImageNet recipe in small: Resize(30) on an 80x60 frame -> 40x30 (scale 0.5);
    # CenterCrop(20) -> columns 10..29, rows 5..24 of the resized image
    spec = Preprocessing(resize="short_side", short_side=30, crop="center", width=20, height=20, color="BGR",
                         layout=Layout.NHWC, dtype="uint8")
    x, place = preprocess(_blocks(60, 80), spec)
    assert x.shape == (1, 20, 20, 3)
    assert x[0, :, :, 0].tolist() == [list(range(10, 30))] * 20
    assert x[0, :, :, 1].tolist() == [[row] * 20 for row in range(5, 25)]
    # a point of the model input maps back to the frame: (input + crop offset) / scale
    assert (place.scale, place.pad_x, place.pad_y) == (0.5, -10.0, -5.0)


def test_short_side_of_a_portrait_frame_scales_the_width() -> None:
    spec = Preprocessing(resize="short_side", short_side=30, crop="center", width=30, height=30, color="BGR",
                         layout=Layout.NHWC, dtype="uint8")
    x, place = preprocess(_blocks(80, 60), spec)  # -> 30x40, crop rows 5..34
    assert x[0, 0, :, 0].tolist() == list(range(30)) and x[0, :, 0, 1].tolist() == list(range(5, 35))
    assert (place.scale, place.pad_x, place.pad_y) == (0.5, 0.0, -5.0)


def test_fixed_resize_then_centre_crop() -> None:
    # resize 80x80 -> 40x40, then crop 30 wide x 20 high: columns 5..34, rows 10..29
    spec = Preprocessing(resize="resize", resize_width=40, resize_height=40, crop="center", width=30, height=20,
                         color="RGB", layout=Layout.NCHW, dtype="float32", mean=[1, 2, 3], std=[1, 1, 2])
    x, place = preprocess(_blocks(80, 80), spec)
    assert x.shape == (1, 3, 20, 30)
    assert np.array_equal(x[0, 0], np.full((20, 30), (7 - 1) / 1, np.float32))  # R first
    assert np.array_equal(x[0, 1], np.repeat(np.arange(10, 30, dtype=np.float32)[:, None] - 2, 30, axis=1))
    assert np.array_equal(x[0, 2], np.repeat((np.arange(5, 35, dtype=np.float32)[None, :] - 3) / 2, 20, axis=0))
    assert (place.scale, place.scale_y, place.pad_x, place.pad_y) == (0.5, 0.5, -5.0, -10.0)


def test_plain_resize_maps_each_axis_back_to_the_frame() -> None:
    spec = Preprocessing(resize="resize", width=40, height=20, color="BGR", layout=Layout.NHWC, dtype="uint8")
    _, place = preprocess(_blocks(60, 80), spec)
    assert (place.scale, place.scale_y, place.pad_x, place.pad_y) == (0.5, pytest.approx(1 / 3), 0.0, 0.0)


@pytest.mark.parametrize(("interpolation", "expected"), [
    # a 4x4 frame of 0..15 (row-major) halved to 2x2
    ("nearest", [[0, 2], [8, 10]]),  # OpenCV's nearest takes source pixel floor(2 * x)
    ("area", [[3, 5], [11, 13]]),  # the mean of each 2x2 block: 2.5, 4.5, 10.5, 12.5, rounded half up
    ("linear", [[3, 5], [11, 13]]),  # halving with half-pixel centres is the same 2x2 mean
])
def test_interpolation_modes(interpolation: str, expected: list[list[int]]) -> None:
    frame = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4)[..., None], 3, axis=2)
    spec = Preprocessing(resize="resize", width=2, height=2, color="BGR", layout=Layout.NHWC, dtype="uint8",
                         interpolation=interpolation)
    x, _ = preprocess(frame, spec)
    assert x[0, :, :, 0].tolist() == expected


def test_cubic_interpolation_overshoots_a_step_where_linear_does_not() -> None:
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, 4:] = 200
    cubic = Preprocessing(resize="resize", width=16, height=4, color="BGR", layout=Layout.NHWC, dtype="uint8",
                          interpolation="cubic")
    x, _ = preprocess(frame, cubic)
    assert x.max() > 200  # the cubic kernel's negative lobes ring past the bright side of the step
    linear, _ = preprocess(frame, cubic.model_copy(update={"interpolation": "linear"}))
    assert linear.max() == 200


@pytest.mark.parametrize(("fields", "message"), [
    ({"resize": "short_side"}, "short_side"),
    ({"resize": "short_side", "short_side": 20, "crop": "center"}, "at least"),
    ({"resize": "short_side", "short_side": 40}, "crop"),
    ({"resize": "letterbox", "crop": "center"}, "letterbox"),
    ({"resize": "resize", "resize_width": 40}, "resize_height"),
    ({"resize": "resize", "resize_width": 20, "resize_height": 40, "crop": "center"}, "at least"),
    ({"resize": "resize", "resize_width": 40, "resize_height": 40}, "crop"),
    ({"resize": "letterbox", "short_side": 40}, "short_side"),
])
def test_inconsistent_resize_and_crop_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocessing.model_validate({"width": 30, "height": 30, "color": "BGR", **fields})


@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("resize", ["resize", "short_side", "letterbox"])
def test_nchw_planes_are_the_transposed_image(color: str, dtype: str, resize: str) -> None:
    """uint8 planes are split straight into the input tensor; float planes normalised plane by plane:
    both equal the interleaved image transposed (a centre crop's view, a letterbox's canvas too)."""
    frame = np.random.default_rng(5).integers(0, 255, (30, 44, 3), np.uint8)
    fields: dict[str, object] = {"resize": resize, "width": 16, "height": 12}
    if resize == "short_side":
        fields.update(short_side=20, crop="center")
    mean, std = ([10.0, 20.0, 30.0], [2.0, 4.0, 8.0]) if dtype == "float32" else ([0.0] * 3, [1.0] * 3)
    spec = Preprocessing(**fields, color=color, layout=Layout.NCHW, dtype=dtype, mean=mean, std=std)  # type: ignore[arg-type]
    x, _ = preprocess(frame, spec)
    nhwc = Preprocessing(**fields, color=color, layout=Layout.NHWC, dtype="uint8")  # type: ignore[arg-type]
    image = preprocess(frame, nhwc)[0][0].astype(np.float32)
    want = ((image - np.asarray(mean, np.float32)) * (1.0 / np.asarray(std, np.float32))).transpose(2, 0, 1)[None]
    assert x.dtype == np.dtype(dtype) and x.shape == (1, 3, 12, 16) and x.flags.c_contiguous
    np.testing.assert_allclose(x.astype(np.float32), want, rtol=1e-6, atol=1e-5)
