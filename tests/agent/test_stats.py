"""Input statistics (issue 14): taken from the frame as the model sees it, every frame, cheaply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent import stats
from agent.postprocess import Detection, Prediction
from agent.preprocess import preprocess, seen
from agent.telemetry import Window
from benchmarks.faults.device import deliver
from contract.manifest import Preprocessing
from examples.fridge.synth import write_dataset

CROP = Preprocessing(resize="short_side", short_side=40, crop="center", width=20, height=20, color="BGR")


def _bordered() -> np.ndarray:
    """An 80x80 frame: a grey (100) centre 40x40 in a white border."""
    frame = np.full((80, 80, 3), 255, np.uint8)
    frame[20:60, 20:60] = 100
    return frame


def test_uniform_and_textured_images_by_hand() -> None:
    bgr = np.zeros((96, 200, 3), np.uint8)
    bgr[:] = (50, 100, 200)  # B, G, R
    s = stats.frame_stats(bgr)
    # grey = 0.299 R + 0.587 G + 0.114 B = 59.8 + 58.7 + 5.7 = 124.2 -> 124; HSV S = (200 - 50) / 200 * 255
    assert s == {"brightness": 124.0, "contrast": 0.0, "saturation": pytest.approx(191.0, abs=0.5)}
    checker = np.zeros((256, 256, 3), np.uint8)
    checker[::2, ::2] = checker[1::2, 1::2] = 255  # 1-pixel texture: averaged away in the 64x64 thumbnail
    assert stats.frame_stats(checker)["contrast"] == pytest.approx(0.0, abs=1.0)
    halves = np.zeros((256, 256, 3), np.uint8)
    halves[:, 128:] = 200  # a real edge stays: half 0, half 200 -> std 100
    assert stats.frame_stats(halves)["contrast"] == pytest.approx(100.0, abs=2.0)


def test_statistics_describe_what_the_model_sees() -> None:
    """A centre crop's cut-off border is not in the statistics, nor a letterbox's padding."""
    frame = _bordered()
    _, place = preprocess(frame, CROP)
    assert place.seen is not None and place.seen.shape == (20, 20, 3)
    window = Window()
    window.inferred(frame, Prediction((), np.zeros(1, np.float32)), 1.0, seen=place.seen)
    assert window.frame(0)["brightness"] == 100.0 and window.frame(0)["contrast"] == 0.0
    letterbox = Preprocessing(resize="letterbox", width=64, height=64, color="BGR", pad_value=0)
    assert stats.frame_stats(seen(frame[20:60, 10:70], letterbox))["brightness"] > 100  # white sides, no black pad


def test_the_agent_reports_the_statistics_of_its_models_input(tmp_path: Path, world: dict[str, object],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop hands the image the model saw to its telemetry window (no second resize of the frame); its
    statistics are taken once, before the inference (while that image is in the CPU's caches: after it,
    every cache is cold and they cost twice as much), and they are the statistics of that image."""
    from agent.config import AgentConfig
    from agent.frames import FolderSource
    from agent.loop import Agent
    from benchmarks.faults.device import MemoryTransport

    root: Path = world["root"]  # type: ignore[assignment]
    write_dataset(tmp_path / "frames", 1, seed=4)
    config = AgentConfig(device_id="fridge-8", groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"])
    a = Agent(config, MemoryTransport(), FolderSource(tmp_path / "frames"))
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    calls: list[object] = []
    measure = stats.frame_values
    monkeypatch.setattr(stats, "frame_values", lambda image: calls.append(image) or measure(image))
    runtime = a.active_model().runtime  # type: ignore[union-attr]
    run = runtime.run
    monkeypatch.setattr(runtime, "run", lambda feed: calls.append("run") or run(feed))
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[:, :200] = 240
    result = a.infer_frame(frame)
    assert not isinstance(result, str) and result.seen is not None and result.seen.shape == (128, 128, 3)
    assert len(calls) == 2 and calls[0] is result.seen and calls[1] == "run"  # once, before the inference
    spec = a.active_model().io.preprocessing  # type: ignore[union-attr]
    assert result.input_values == tuple(stats.frame_stats(seen(frame, spec)).values())
    assert a.window.frame(-1) == stats.frame_stats(seen(frame, spec))
    a.spool.close()


def test_statistics_given_to_the_window_are_those_it_would_take() -> None:
    """``Window.inferred`` with the values ``predict`` took records what it records from the image itself."""
    frames = [np.random.default_rng(i).integers(0, 255, (40 + i, 56, 3), np.uint8) for i in range(6)]
    prediction = Prediction((Detection("a", 0.8),), np.asarray([0.8], np.float32))
    given, taken = Window(), Window()
    for frame in frames:
        given.inferred(frame, prediction, 1.0, 0.5, seen=frame, input_values=stats.frame_values(frame))
        taken.inferred(frame, prediction, 1.0, 0.5, seen=frame)
    assert [given.frame(i) for i in range(6)] == [taken.frame(i) for i in range(6)]
    assert given.close("d", 1, "e", None, 0, 0).input_stats == taken.close("d", 1, "e", None, 0, 0).input_stats


def _window_of(frames: list[np.ndarray], predictions: list[Prediction]) -> Window:
    window = Window()
    for i, (frame, prediction) in enumerate(zip(frames, predictions, strict=True)):
        window.inferred(frame, prediction, 1.0 + i, 0.5 + i / 7, seen=frame)
    return window


def test_a_window_keeps_no_python_object_per_frame() -> None:
    """Per frame the window appends a few C doubles: no dict of statistics, no boxed floats (issue 14:
    the telemetry bookkeeping was 15 us of the fridge model's frame, and memory grew per frame)."""
    import tracemalloc

    seen_image = np.random.default_rng(3).integers(0, 255, (128, 128, 3), np.uint8)
    prediction = Prediction((Detection("apple", 0.9),), np.asarray([0.9, 0.1], np.float32))
    window = Window()
    for _ in range(64):
        window.inferred(seen_image, prediction, 1.25, 0.75, seen=seen_image)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        window.inferred(seen_image, prediction, 1.25, 0.75, seen=seen_image)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown / 2000 < 64, f"{grown / 2000:.0f} bytes kept per frame"  # 6 doubles = 48 bytes, + growth slack


def test_the_closed_window_is_what_the_frames_say() -> None:
    """Means, histograms, scores, counts and inventory of a closed window, against the per-frame
    statistics computed one by one (``frame_stats``) and folded as a reference."""
    frames = [np.random.default_rng(i).integers(0, 255, (32 + i, 48, 3), np.uint8) // (1 + i % 4) for i in range(40)]
    predictions = [Prediction(tuple(Detection(label, 0.8) for label in (["a", "b"] if i % 3 else ["a"])),
                              np.asarray([0.8, 0.7 if i % 3 else 0.1, i / 40], np.float32)) for i in range(40)]
    closed = _window_of(frames, predictions).close("d", 1, "e", None, 0, 0)
    per_frame = [stats.frame_stats(f) for f in frames]
    assert closed.inferences == 40 and closed.predictions == {"a": 40, "b": 26}
    assert closed.inventory == {"a": 1}  # the last frame's
    assert closed.input_stats.means == {k: float(np.mean([s[k] for s in per_frame])) for k in stats.EDGES}
    assert closed.input_stats.histograms == stats.input_histograms(per_frame)
    assert sum(closed.input_stats.histograms["brightness"].counts) == 40
    tops = [float(np.max(p.scores)) for p in predictions]
    assert closed.score_histogram == stats.histogram(tops, stats.SCORE_EDGES)
    assert closed.latency_ms is not None and closed.latency_ms.max == 40.0
    model_ms = [0.5 + i / 7 for i in range(40)]
    assert closed.model_latency_ms is not None and closed.model_latency_ms.p50 == float(np.median(model_ms))
