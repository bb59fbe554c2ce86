"""The search's choice between candidates within budget does not depend on how busy the host was:
latency decides only when the interleaved ratios' spreads say so, otherwise size does, then a
fixed order (found by review: the same compile on a busy 2-core host shipped different variants)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from compiler import latency
from compiler.description import load_description
from compiler.evalcache import EvaluationCache
from compiler.evaluate import image_sets
from compiler.graph import GraphStats
from compiler.pipeline import Pipeline, Step
from compiler.search import Candidate, SearchRecord, choose
from compiler.target import load_target
from tests.compiler.trained import train

FLOAT_SIZE = 1_000_000
SEEDS = range(24)


class NoisyHost:
    """Fake models on a busy shared host: every run costs the model's base time times a random
    slowness (another job's burst), drawn from a seeded generator: one seed, one day's noise."""

    def __init__(self, seed: int, spread: float) -> None:
        self.rng = random.Random(seed)
        self.spread = spread

    def model(self, base_ms: float) -> NoisyModel:
        return NoisyModel(self, base_ms)


class NoisyModel:
    def __init__(self, host: NoisyHost, base_ms: float) -> None:
        self.host, self.base_ms = host, base_ms

    def time_runs(self, x: object = None, warmup: int = 5, iterations: int = 40) -> list[float]:
        # bursts last about a block of runs: the whole block shares one slowness
        slowness = 1.0 + self.host.rng.random() * self.host.spread
        return [self.base_ms * slowness for _ in range(warmup + iterations)][warmup:]


def _candidate(label: str, size_ratio: float, timed: latency.Latency) -> Candidate:
    size = int(size_ratio * FLOAT_SIZE)
    stats = GraphStats(size, 1000, 1000, 0.0, ("Conv",))
    step = Step(label, Path(f"{label}.onnx"), {}, stats, 0.995, None, timed, True, "int8")
    return Candidate(label, step.model, size, "int8", "quantize.static", step=step, latency=timed,
                     status="within budget")


def _choice(seed: int, candidates: list[tuple[str, float, float]], spread: float = 1.5) -> tuple[str, SearchRecord]:
    """``candidates``: label, size vs float, true latency vs float; timed interleaved on a noisy host."""
    host = NoisyHost(seed, spread)
    reference = host.model(10.0)
    record = SearchRecord("quantize.static", FLOAT_SIZE, 0.99)
    for label, size_ratio, speed in candidates:
        timed = latency.interleaved(host.model(10.0 * speed), reference, None, None, warmup=0)
        record.candidates.append(_candidate(label, size_ratio, timed))
    chosen = choose(record)
    assert chosen is not None
    return chosen.label, record


def test_candidates_alike_in_size_x_latency_give_the_same_choice_whatever_the_noise() -> None:
    """Two variants with the same size x latency (0.15 of float): the median ratios of a noisy host
    used to pick one or the other from run to run; a tie within the spread goes to the smaller."""
    alike = [("fp16 weights", 0.50, 0.30), ("the first 8 nodes in float", 0.30, 0.50)]
    choices = {_choice(seed, alike)[0] for seed in SEEDS}
    assert choices == {"the first 8 nodes in float"}
    # the same in the other order: the order the candidates were built in does not decide a tie of sizes
    assert {_choice(seed, alike[::-1])[0] for seed in SEEDS} == {"the first 8 nodes in float"}


def test_latency_still_decides_when_the_spreads_do_not_overlap() -> None:
    """A variant 3x faster beyond any round's noise wins over a slightly smaller one, in every seed."""
    apart = [("int8 weights, float activations", 0.26, 0.95), ("the first 4 nodes in float", 0.28, 0.30)]
    for seed in SEEDS:
        label, record = _choice(seed, apart, spread=0.3)
        assert label == "the first 4 nodes in float"
        reason = record.manifest()["reason"]
        assert "faster beyond the noise" in reason and "percentiles" in reason


def test_equal_sizes_tie_in_a_fixed_order_and_the_reason_is_recorded() -> None:
    same = [("a", 0.30, 0.50), ("b", 0.30, 0.50), ("c", 0.30, 0.50)]
    for seed in SEEDS:
        label, record = _choice(seed, same)
        assert label == "a"
        reason = record.manifest()["reason"]
        assert "tie" in reason and "'b'" in reason and "smallest" in reason


@pytest.mark.parametrize("spread", [0.2, 0.5])
def test_a_front_like_the_fridge_searchs_gives_the_same_choice_across_seeds(spread: float) -> None:
    """Full int8 with nodes in float (0.40-0.42x of float), int8 weights and fp16 weights (float's
    speed): the 2.4x between them in size x latency decides in every seed; between the two int8 sets,
    5 % apart, size does. (Where a difference is of the order of the host's noise, as 1.75x is when
    runs take 1x to 2x their time, a choice by latency cannot be the same in every run: such a
    difference is decided by latency in some runs and is a tie, hence size, in others.)"""
    front = [("the 4 most sensitive node(s) in float", 0.27, 0.42), ("the first 8 nodes in float", 0.29, 0.40),
             ("quantize.weights", 0.26, 1.00), ("fp16 weights_only=True", 0.51, 1.00)]
    assert {_choice(seed, front, spread)[0] for seed in SEEDS} == {"the 4 most sensitive node(s) in float"}


class NoisyTimedPipeline(Pipeline):
    """The real pipeline (builds, evaluations, search) on a host whose timings are noisy: each
    model's latency is interleaved with float on ``host``, at the speed given for its work folder."""

    def __init__(self, *args: object, host: NoisyHost, speeds: dict[str, float], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.host, self.speeds = host, speeds

    def time(self, model: Path, io: object = None) -> latency.Latency:
        speed = next((v for k, v in self.speeds.items() if k in model.parent.name), 1.0)
        return latency.interleaved(self.host.model(10.0 * speed), self.host.model(10.0), None, None, warmup=0)


def test_the_whole_search_ships_the_same_variant_across_seeds_of_noise(tmp_path: Path) -> None:
    """The outlier classifier (tests/compiler/trained.py) on a72: full int8 misses the budget, fp16
    weights (0.53x of float in size, float's speed) and float with graph optimisations (1.02x in
    size, at 0.52x of float's time on this imagined host) both meet it with the same size x latency.
    Before: whether the second was evaluated, and which shipped, followed each run's noise."""
    model, description, calibration, evaluation = train(tmp_path / "model")
    desc = load_description(description)
    cal, ev, _ = image_sets(calibration, evaluation, 100, 0, desc)
    cache = EvaluationCache()  # the same bytes are evaluated once across the seeds
    outcomes = set()
    for seed in range(8):
        pipeline = NoisyTimedPipeline(desc, load_target("arm64-cortex-a72-ort"), cal, ev, tmp_path / f"seed{seed}",
                                      cache=cache, host=NoisyHost(seed, 1.5), speeds={"optimize.graph": 0.52})
        result = pipeline.run(model)
        (record,) = pipeline.searches
        assert record.chosen is not None
        outcomes.add((record.chosen.label, tuple(c.status.split(" (")[0] for c in record.candidates),
                      tuple(s.name for s in result.steps)))
    assert len(outcomes) == 1, outcomes
    ((chosen, statuses, steps),) = outcomes
    assert chosen == "fp16 weights_only=True" and "fp16" in steps
    assert "not evaluated: size x latency no better than 'fp16 weights_only=True'" in statuses
