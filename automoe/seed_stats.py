"""Statistics of independent repeated runs (seeds): a distribution-free interval of the
median, and a two-sample rank-sum permutation test.

A search benchmark runs each algorithm with several seeds; the runs of two algorithms are
independent samples (seed 3 of one algorithm shares nothing with seed 3 of another), so
they are compared as two samples, not as pairs.

- `median_interval`: the median with the order-statistic interval ``[x_(k), x_(n+1-k)]``,
  whose coverage ``1 - 2 P(Binomial(n, 1/2) < k)`` holds for any continuous distribution
  (no bootstrap: with 10 seeds a bootstrap of the median has only a handful of values).
- `rank_sum_test`: Wilcoxon-Mann-Whitney by permutation. The statistic is the sum of A's
  mid-ranks in the pooled sample; the p-value counts the splits of the pooled values into
  groups of the two sizes whose rank sum lies at least as far from its mean as the
  observed one. Every split is enumerated when there are at most ``exact_limit`` of them
  (10 vs 10 seeds: 184,756), so the test is exact, ties included; otherwise random splits
  with the +1 rule (seeded like every resampling of `automoe.stats`). The effect size is
  the probability of superiority ``P(A > B) + P(A = B) / 2`` over all cross pairs.

``tests/test_seed_stats.py`` simulates both under their nulls and against planted
differences, and checks them against scipy (binomial coverage, ``mannwhitneyu``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from automoe.stats import bootstrap_seed

__all__ = ["MedianInterval", "median_interval", "order_statistic_coverage", "RankSumResult", "rank_sum_test",
           "RANK_SUM_TEST", "EXACT_LIMIT"]

RANK_SUM_TEST = "Wilcoxon-Mann-Whitney rank sum, two-sided permutation test (mid-ranks for ties)"
EXACT_LIMIT = 200_000  # splits enumerated exactly (C(20, 10) = 184,756)


def _finite(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D series, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: {int((~np.isfinite(x)).sum())} value(s) not finite")
    return x


@dataclass(frozen=True)
class MedianInterval:
    """The median of n values and a distribution-free interval around it.

    Attributes:
        median: the sample median.
        lo, hi: the order statistics ``x_(k)`` and ``x_(n+1-k)``.
        coverage: the interval's exact coverage of the population median (>= the level
            asked for; discrete, so usually above it: 97.9% for n = 10 at 95%).
        n: values.
    """

    median: float
    lo: float
    hi: float
    coverage: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "lo": self.lo, "hi": self.hi,
                "coverage": self.coverage, "n": self.n}


def order_statistic_coverage(n: int, k: int) -> float:
    """Coverage of ``[x_(k), x_(n+1-k)]`` for the median: ``1 - 2 P(Binomial(n, 1/2) < k)``."""
    if not 1 <= k <= (n + 1) // 2:
        raise ValueError(f"order statistic k={k} must be in 1..{(n + 1) // 2} for n={n}")
    tail = sum(math.comb(n, j) for j in range(k)) / 2.0 ** n
    return 1.0 - 2.0 * tail


def median_interval(values: Sequence[float] | np.ndarray, *, level: float = 0.95
                    ) -> MedianInterval:
    """The median of `values` ([n]) with the narrowest order-statistic interval whose
    coverage is at least `level`. Raises ValueError when n is too small for any such
    interval (at 95%: n < 6)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.sort(_finite(values, "median_interval"))
    n = len(x)
    best = None
    for k in range(1, (n + 1) // 2 + 1):
        coverage = order_statistic_coverage(n, k)
        if coverage < level:
            break
        best = (k, coverage)
    if best is None:
        reach = order_statistic_coverage(n, 1)
        raise ValueError(f"median_interval: {n} values give at most {reach:.1%} coverage "
                         f"(the range), below the {level:.0%} asked for; need more values")
    k, coverage = best
    return MedianInterval(float(np.median(x)), float(x[k - 1]), float(x[n - k]), coverage, n)


@dataclass(frozen=True)
class RankSumResult:
    """Sample A against sample B (independent runs).

    Attributes:
        superiority: ``P(A > B) + P(A = B) / 2`` over all cross pairs (0.5: no tendency;
            1: every A above every B). Equals Mann-Whitney's U / (n_a n_b).
        p_value: two-sided p-value of "A and B come from one distribution".
        n_a, n_b: sample sizes.
        exact: True when every split was enumerated.
        splits: splits counted (all of them when exact, else the random draws).
        test: `RANK_SUM_TEST`.
    """

    superiority: float
    p_value: float
    n_a: int
    n_b: int
    exact: bool
    splits: int
    test: str = RANK_SUM_TEST

    def to_dict(self) -> dict[str, float | int | bool | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@lru_cache(maxsize=8)
def _splits(n: int, n_a: int) -> np.ndarray:
    """[C(n, n_a), n_a] every choice of A's positions among n pooled values."""
    dtype = np.int16 if n < 2 ** 15 else np.int64
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), n_a)),
                       dtype=dtype, count=math.comb(n, n_a) * n_a)
    out = flat.reshape(-1, n_a)
    out.setflags(write=False)
    return out


def rank_sum_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                  exact_limit: int = EXACT_LIMIT, resamples: int = 20_000,
                  seed: int | None = None) -> RankSumResult:
    """Two-sided Wilcoxon-Mann-Whitney permutation test of A against B ([n_a], [n_b]).

    Exact (every split enumerated) when ``C(n_a + n_b, n_a) <= exact_limit``; otherwise
    `resamples` random splits, p = ``(#{as extreme} + 1) / (resamples + 1)``, drawn from
    ``default_rng(seed)`` (`automoe.stats.bootstrap_seed` when None). Two identical
    samples get p = 1.
    """
    from scipy.stats import rankdata

    xa, xb = _finite(a, "rank_sum_test: a"), _finite(b, "rank_sum_test: b")
    if resamples < 1 or exact_limit < 1:
        raise ValueError(f"resamples and exact_limit must be >= 1, got {resamples}, "
                         f"{exact_limit}")
    n_a, n_b = len(xa), len(xb)
    n = n_a + n_b
    ranks = rankdata(np.concatenate([xa, xb]))  # mid-ranks: ties share their mean rank
    centre = n_a * (n + 1) / 2.0
    observed = float(ranks[:n_a].sum() - centre)
    superiority = (observed + n_a * n_b / 2.0) / (n_a * n_b)
    threshold = abs(observed) - 1e-9  # rank sums are multiples of 1/2: exact in floats
    total = math.comb(n, n_a)
    if total <= exact_limit:
        sums = ranks[_splits(n, n_a)].sum(axis=1) - centre
        p = float(np.count_nonzero(np.abs(sums) >= threshold) / total)
        return RankSumResult(superiority, p, n_a, n_b, True, total)
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    extreme = 0
    for start in range(0, resamples, 1024):
        k = min(1024, resamples - start)
        perm = rng.permuted(np.tile(np.arange(n), (k, 1)), axis=1)[:, :n_a]
        extreme += int(np.count_nonzero(np.abs(ranks[perm].sum(axis=1) - centre) >= threshold))
    return RankSumResult(superiority, (extreme + 1) / (resamples + 1), n_a, n_b, False,
                         resamples)
