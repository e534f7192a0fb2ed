"""The statistics of repeated runs (automoe.seed_stats), tested like automoe.stats: the
rank-sum test simulated under its null (p < 0.05 about 5% of the time, never more) and
against a planted difference, with ties; both statistics against independent oracles
(scipy's binomial distribution and Mann-Whitney test, brute-force pair counting)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, mannwhitneyu

from automoe.seed_stats import (
    median_interval,
    order_statistic_coverage,
    rank_sum_test,
)

# ---- calibration and power ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_rank_sum_test_rejects_a_true_null_at_its_nominal_rate(kind):
    rng = np.random.default_rng(0)
    sims, rejected = 2000, 0
    for _ in range(sims):
        if kind == "continuous":
            a, b = rng.normal(size=8), rng.normal(size=8)
        else:  # few distinct values, so most splits tie
            a, b = rng.integers(0, 4, size=8), rng.integers(0, 4, size=8)
        rejected += rank_sum_test(a, b).p_value < 0.05
    rate = rejected / sims
    # an exact test never exceeds its level; its attainable sizes are discrete, and coarser
    # with ties, so the rate sits a little below 0.05
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)
    assert rate >= (0.025 if kind == "continuous" else 0.015)


def test_rank_sum_test_random_splits_are_calibrated():
    rng = np.random.default_rng(1)
    sims = 400
    p = [rank_sum_test(rng.normal(size=10), rng.normal(size=10), exact_limit=1,
                       resamples=500, seed=i).p_value for i in range(sims)]
    rate = float(np.mean(np.array(p) < 0.05))
    assert 0.015 <= rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)


def test_rank_sum_test_finds_a_planted_difference_and_names_its_side():
    rng = np.random.default_rng(2)
    results = [rank_sum_test(rng.normal(1.5, 1, size=10).round(1), rng.normal(0, 1, size=10))
               for _ in range(100)]
    assert np.mean([r.p_value < 0.05 for r in results]) >= 0.8  # power ~0.9 at 1.5 sd
    assert all(r.superiority > 0.5 for r in results if r.p_value < 0.05)
    worse = rank_sum_test(np.arange(10.0), np.arange(10.0) + 20)
    assert worse.superiority == 0.0 and worse.p_value == pytest.approx(2 / 184_756)


# ---- oracles ----------------------------------------------------------------------------------


def test_rank_sum_test_equals_scipys_exact_mann_whitney_without_ties():
    rng = np.random.default_rng(3)
    for n_a, n_b in [(10, 10), (6, 9), (3, 12), (1, 5)]:
        for _ in range(5):
            a, b = rng.normal(size=n_a), rng.normal(size=n_b) + rng.uniform(-1, 1)
            ours = rank_sum_test(a, b)
            ref = mannwhitneyu(a, b, method="exact", alternative="two-sided")
            assert ours.exact
            assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
            assert ours.superiority == pytest.approx(ref.statistic / (n_a * n_b))


def test_rank_sum_superiority_counts_ties_as_half():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 3, size=7), rng.integers(0, 3, size=9)
    brute = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])
    assert rank_sum_test(a, b).superiority == pytest.approx(brute)


def test_rank_sum_test_with_ties_equals_brute_force_enumeration():
    a, b = np.array([1, 1, 2, 3]), np.array([1, 2, 2, 0, 0])
    pooled = np.concatenate([a, b])
    import itertools

    from scipy.stats import rankdata

    ranks = rankdata(pooled)
    centre = 4 * 10 / 2
    obs = abs(ranks[:4].sum() - centre)
    splits = list(itertools.combinations(range(9), 4))
    extreme = sum(abs(ranks[list(s)].sum() - centre) >= obs - 1e-9 for s in splits)
    assert rank_sum_test(a, b).p_value == pytest.approx(extreme / len(splits))


def test_identical_samples_get_p_one():
    x = [0.3, 0.1, 0.2, 0.2, 0.5]
    result = rank_sum_test(x, x)
    assert result.p_value == 1.0 and result.superiority == 0.5


def test_median_interval_coverage_is_the_binomial_one_and_holds_in_simulation():
    for n in (6, 10, 15, 30):
        for k in range(1, (n + 1) // 2 + 1):
            assert order_statistic_coverage(n, k) == pytest.approx(
                1 - 2 * binom.cdf(k - 1, n, 0.5))
    rng = np.random.default_rng(5)
    draws = rng.exponential(size=(4000, 10))  # skewed; population median ln 2
    hits = 0
    for row in draws:
        mi = median_interval(row)
        hits += mi.lo <= np.log(2) <= mi.hi
    mi = median_interval(draws[0])
    assert mi.coverage == pytest.approx(1 - 2 * 11 / 1024)  # n = 10: [x_(2), x_(9)]
    assert abs(hits / len(draws) - mi.coverage) < 3 * np.sqrt(0.02 * 0.98 / len(draws))


def test_median_interval_picks_the_order_statistics():
    mi = median_interval([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    assert (mi.median, mi.lo, mi.hi, mi.n) == (5.5, 2.0, 9.0, 10)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="need more values"):
        median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="not finite"):
        rank_sum_test([1.0, float("nan")], [2.0])
    with pytest.raises(ValueError, match="non-empty"):
        rank_sum_test([], [1.0])
    with pytest.raises(ValueError, match="level"):
        median_interval(range(10), level=1.0)
