"""Honest compile-time latency (issue 15): candidates timed interleaved with the float reference,
the host and threads named, and a board that is not this host called a proxy."""

from __future__ import annotations

import os
import platform

import pytest

from compiler import latency
from compiler.target import load_target


class DriftingHost:
    """Run times of fake models on a host whose load changes over time: every run costs the model's
    base time times the host's current slowness, which doubles after ``change_after`` runs."""

    def __init__(self, change_after: int) -> None:
        self.runs = 0
        self.change_after = change_after

    def model(self, base_ms: float) -> FakeModel:
        return FakeModel(self, base_ms)


class FakeModel:
    def __init__(self, host: DriftingHost, base_ms: float) -> None:
        self.host, self.base_ms = host, base_ms

    def time_runs(self, x: object = None, warmup: int = 5, iterations: int = 40) -> list[float]:
        times = []
        for _ in range(warmup + iterations):
            self.host.runs += 1
            slowness = 1.0 if self.host.runs <= self.host.change_after else 2.0
            times.append(self.base_ms * slowness)
        return times[warmup:]


def test_a_host_that_slows_down_midway_does_not_make_a_speed_up() -> None:
    """Before: the float model was timed once, early, and each candidate later, so a host that got
    busier in between made an identical model look 2x slower (and a quieter one, 2x faster)."""
    # the old way: the float reference alone first (45 runs), the candidate after the host got busier
    host = DriftingHost(change_after=45)
    reference, same = host.model(10.0), host.model(10.0)
    before = sum(reference.time_runs(None, 5, 40)) / 40
    old_ratio = (sum(same.time_runs(None, 5, 40)) / 40) / before
    assert old_ratio == pytest.approx(2.0)
    # interleaved: the same change in the middle of the rounds
    host = DriftingHost(change_after=25)
    reference, same = host.model(10.0), host.model(10.0)
    measured = latency.interleaved(same, reference, None, None, rounds=9)
    assert host.runs > 25  # the change did happen during the rounds
    assert measured.ratio == pytest.approx(1.0)
    assert measured.ratio_low == pytest.approx(1.0) and measured.ratio_high == pytest.approx(1.0)
    half = host.model(5.0)
    host.runs = 0
    assert latency.interleaved(half, reference, None, None, rounds=9).ratio == pytest.approx(0.5)


def test_the_spread_of_the_rounds_is_reported() -> None:
    """A round in which the host hiccuped shows in the interquartile range, not as the figure."""
    host = DriftingHost(change_after=10**9)
    reference = host.model(10.0)
    jumpy = FakeModel(host, 8.0)
    calls = {"n": 0}
    plain = jumpy.time_runs

    def hiccup(x: object = None, warmup: int = 5, iterations: int = 40) -> list[float]:
        calls["n"] += 1
        return [t * (3.0 if calls["n"] in (4, 6) else 1.0) for t in plain(x, warmup, iterations)]

    jumpy.time_runs = hiccup  # type: ignore[method-assign]
    measured = latency.interleaved(jumpy, reference, None, None, rounds=9)
    assert measured.ratio == pytest.approx(0.8)
    assert measured.rounds == 9 and measured.ratio_high >= measured.ratio >= measured.ratio_low
    assert "0.80x" in measured.text


def test_the_title_names_threads_host_and_whether_the_figure_is_a_proxy() -> None:
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    jetson = latency.title(load_target("jetson-orin-trt-int8"), 9)
    assert "proxy: onnxruntime on this host, not TensorRT" in jetson
    a72 = latency.title(load_target("arm64-cortex-a72-ort"), 9)
    assert latency.cpu_model() in a72 and f"{os.cpu_count()} cores" in a72 and "interleaved with float" in a72
    assert f"{load_target('arm64-cortex-a72-ort').host_threads} thread(s)" in a72
    litert = latency.title(load_target("arm64-litert"), 9)
    if x86:
        assert "proxy: onnxruntime on this host, not the cortex-a72 board" in a72
        assert "proxy: LiteRT on this host" in litert
        assert "proxy" not in latency.title(load_target("x86-64-avx512-ort"), 9)

