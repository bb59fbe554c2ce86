"""Drift measures between two distributions over the same bins or labels.

PSI (population stability index): sum((a - e) * ln(a / e)); < 0.1 stable, 0.1-0.25 moderate,
> 0.25 significant. Jensen-Shannon divergence in base 2: 0 identical, 1 disjoint.
Zero bins are smoothed with ``EPS`` so neither measure is infinite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from contract.base import MAX_INT
from contract.common import Histogram

EPS = 1e-4


def _normalise(counts: Iterable[float]) -> list[float]:
    values = [max(float(c), 0.0) for c in counts]
    total = sum(values)
    if total <= 0:
        raise ValueError("a distribution with no mass cannot be compared")
    smoothed = [v / total + EPS for v in values]
    norm = sum(smoothed)
    return [v / norm for v in smoothed]


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    e, a = _normalise(expected), _normalise(actual)
    if len(e) != len(a):
        raise ValueError(f"PSI needs the same bins on both sides ({len(e)} vs {len(a)})")
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def js(p: Iterable[float], q: Iterable[float]) -> float:
    pn, qn = _normalise(p), _normalise(q)
    if len(pn) != len(qn):
        raise ValueError(f"Jensen-Shannon needs the same support on both sides ({len(pn)} vs {len(qn)})")
    m = [(a + b) / 2 for a, b in zip(pn, qn, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m, strict=True))

    return max(0.0, min(1.0, (kl(pn) + kl(qn)) / 2))


def label_js(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon between two label -> count (or rate) maps, over the union of labels."""
    labels = sorted({*p, *q})
    if not labels:
        raise ValueError("no labels on either side")
    return js([p.get(k, 0.0) for k in labels], [q.get(k, 0.0) for k in labels])


def add_histograms(histograms: Iterable[Histogram]) -> Histogram | None:
    """Sum histograms with identical edges (those with other edges are skipped)."""
    total: Histogram | None = None
    for h in histograms:
        if total is None:
            total = h.model_copy()
        elif h.edges == total.edges:
            total = Histogram(edges=total.edges, counts=[min(a + b, MAX_INT)  # each bounded, sums are not
                                                         for a, b in zip(total.counts, h.counts, strict=True)])
    return total


MIN_PER_BIN = 10  # PSI over sparse bins is noise: each merged bin should expect this many samples
MAX_BINS = 10


def merged_bins(reference: list[int], bins: int) -> list[tuple[int, int]]:
    """Group adjacent bins into ``bins`` groups of roughly equal reference mass (quantile bins)."""
    total = sum(reference)
    groups: list[tuple[int, int]] = []
    start, acc, k = 0, 0, 1
    for i, count in enumerate(reference):
        acc += count
        if acc >= total * k / bins and len(groups) < bins - 1:
            groups.append((start, i + 1))
            start, k = i + 1, k + 1
            while acc >= total * k / bins and k < bins:
                k += 1
    groups.append((start, len(reference)))
    return [g for g in groups if g[1] > g[0]]


def histogram_psi(reference: Histogram, observed: Histogram) -> float | None:
    """PSI of ``observed`` against ``reference`` over quantile bins of the reference; None when the
    bins differ or either side has too few samples for even two bins."""
    n_ref, n_obs = sum(reference.counts), sum(observed.counts)
    if reference.edges != observed.edges or min(n_ref, n_obs) < 2 * MIN_PER_BIN:
        return None
    groups = merged_bins(reference.counts, min(MAX_BINS, min(n_ref, n_obs) // MIN_PER_BIN))
    return psi([sum(reference.counts[a:b]) for a, b in groups], [sum(observed.counts[a:b]) for a, b in groups])
