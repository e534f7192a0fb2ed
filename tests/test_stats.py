"""The significance tests and rank statistics of automoe.stats, tested like code: each test
is simulated under its null (the rejection rate at 0.05 must be about 5%) and against a
planted difference (it must find it), and each statistic against an independent oracle
(numpy's sample standard deviation, sacreBLEU's approximate randomization, scipy's Kendall
tau, brute-force pair counting, Holm's procedure by hand)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest
from scipy.stats import kendalltau

from automoe.stats import (
    holm,
    kendall_tau_b,
    loss_with_se,
    paired_bleu_test,
    paired_loss_test,
    paired_stats_test,
    rank_agreement,
    sentence_stats,
    tau_difference,
)

WORDS = ["the", "a", "cat", "dog", "house", "sees", "runs", "small", "big", "old", "man",
         "child", "eats", "bread", "and"]


def _refs(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def _noisy(refs: list[str], noise: float, rng: random.Random) -> list[str]:
    """Each reference with its words replaced at rate `noise`."""
    return [" ".join(w if rng.random() > noise else rng.choice(WORDS) for w in r.split())
            for r in refs]


def _losses(rng: np.random.Generator, n: int, gap: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sentence loss sums of two systems on n sentences of varying length and
    difficulty; B is worse by `gap` nats per token (0: exchangeable systems)."""
    counts = rng.integers(3, 40, size=n)
    difficulty = rng.gamma(4.0, 1.0, size=n)
    a = counts * difficulty * rng.gamma(20.0, 1 / 20, size=n)
    b = counts * (difficulty * rng.gamma(20.0, 1 / 20, size=n) + gap)
    return a, b, counts


# ---- calibration and power ------------------------------------------------------------------


def test_loss_test_rejects_a_true_null_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    sims = 1000
    rejected = sum(paired_loss_test(*_losses(rng, 200), seed=s).p_value < 0.05
                   for s in range(sims))
    assert 0.03 <= rejected / sims <= 0.07


def test_loss_test_finds_a_planted_difference():
    rng = np.random.default_rng(1)
    results = [paired_loss_test(*_losses(rng, 200, gap=0.4), seed=s) for s in range(200)]
    assert np.mean([r.p_value < 0.05 for r in results]) > 0.8
    assert all(r.delta < 0 for r in results if r.p_value < 0.05)  # A is the better one
    assert np.mean([r.lo < -0.4 < r.hi for r in results]) > 0.85  # the interval covers it


def test_corpus_scores_from_summed_statistics_are_sacrebleus_bit_for_bit():
    """The paired tests score thousands of resampled corpora at once; each score is the one
    sacreBLEU computes from the same statistics, edge cases included (no matches, orders
    without n-grams, empty hypotheses, hypotheses longer and shorter than the reference)."""
    from automoe.stats import _bleu_scores, _chrf_scores

    rng = np.random.default_rng(0)
    r = 3000
    total = -np.sort(-rng.integers(0, 30, size=(r, 4)), axis=1).astype(float)
    correct = np.floor(total * rng.random((r, 4)) * (rng.random((r, 4)) > 0.2))
    bleu = np.column_stack([total[:, 0] + rng.integers(0, 3, r), rng.integers(0, 60, r),
                            correct, total])
    hyp, ref = (rng.integers(0, 30, size=(r, 6)) * (rng.random((r, 6)) > 0.1)
                for _ in range(2))
    chrf = np.zeros((r, 18))
    chrf[:, 0::3], chrf[:, 1::3] = hyp, ref
    chrf[:, 2::3] = np.floor(np.minimum(hyp, ref) * rng.random((r, 6)))
    for rows, ours, metric in ((bleu, _bleu_scores, BLEU()), (chrf, _chrf_scores, CHRF())):
        want = np.array([metric._compute_score_from_stats(row.tolist()).score for row in rows])
        assert 0.001 < np.mean(want == 0) < 0.5  # the edge cases are there
        np.testing.assert_array_equal(ours(rows), want)


def test_bleu_and_chrf_tests_reject_a_true_null_at_their_nominal_rate():
    """500 pairs of systems that do not differ: per sentence, both outputs are drawn from
    the same 16 noisy variants of its reference (sentence statistics extracted once)."""
    rng = random.Random(0)
    refs, variants = _refs(300, rng), 16
    pool = [sentence_stats(_noisy(refs, 0.3, rng), refs) for _ in range(variants)]
    stats = {m: np.stack([p[m] for p in pool], axis=1) for m in ("bleu", "chrf")}  # [S, V, K]
    sims, draw = 500, np.random.default_rng(1)
    rejected = {"bleu": 0, "chrf": 0}
    for s in range(sims):
        rows = draw.choice(len(refs), size=60, replace=False)
        pick_a, pick_b = draw.integers(variants, size=(2, 60))
        for m in rejected:
            a, b = stats[m][rows, pick_a], stats[m][rows, pick_b]
            rejected[m] += paired_stats_test(m, a, b, resamples=199, seed=s).p_value < 0.05
    for m, count in rejected.items():
        assert 0.03 <= count / sims <= 0.07, m


def test_bleu_and_chrf_tests_find_a_planted_difference():
    found = {"bleu": 0, "chrf": 0}
    for s in range(60):
        rng = random.Random(1000 + s)
        refs = _refs(60, rng)
        result = paired_bleu_test(_noisy(refs, 0.15, rng), _noisy(refs, 0.35, rng), refs,
                                  resamples=199, seed=s)
        for m in found:
            found[m] += result[m].p_value < 0.05 and result[m].delta > 0
    assert found["bleu"] / 60 > 0.8 and found["chrf"] / 60 > 0.8


def _predictors(rng: np.random.Generator, n: int, noise1: float, noise2: float):
    quality = rng.normal(size=n)
    y = quality + 0.5 * rng.normal(size=n)
    return (quality + noise1 * rng.normal(size=n), quality + noise2 * rng.normal(size=n), y)


def test_tau_difference_rejects_a_true_null_at_its_nominal_rate():
    rng = np.random.default_rng(2)
    sims = 500
    rate = {n: sum(tau_difference(*_predictors(rng, n, 1.0, 1.0), resamples=400,
                                  seed=s)["p_value"] < 0.05 for s in range(sims)) / sims
            for n in (16, 32)}
    assert 0.03 <= rate[32] <= 0.07
    assert rate[16] <= 0.07  # conservative with few items, never liberal


def test_tau_difference_finds_a_better_predictor_and_names_its_side():
    rng = np.random.default_rng(3)
    results = [tau_difference(*_predictors(rng, 32, 0.2, 2.0), resamples=400, seed=s)
               for s in range(100)]
    assert np.mean([r["p_value"] < 0.05 for r in results]) > 0.8
    assert all(r["delta"] > 0 and r["lo"] <= r["delta"] <= r["hi"] for r in results)
    swapped = tau_difference(*_predictors(np.random.default_rng(4), 32, 2.0, 0.2)[:2][::-1],
                             _predictors(np.random.default_rng(4), 32, 2.0, 0.2)[2])
    assert swapped["delta"] > 0 and swapped["p_value"] < 0.05


def test_grouped_tau_difference_is_calibrated_and_ignores_what_separates_groups():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(4), 8)
    sims = 300
    rejected = 0
    for s in range(sims):
        x1, x2, y = _predictors(rng, 32, 1.0, 1.0)
        x2 = x2 + 10 * groups  # ranks the groups perfectly: irrelevant within groups
        y = y + 10 * groups
        rejected += tau_difference(x1, x2, y, groups=groups, resamples=300,
                                   seed=s)["p_value"] < 0.05
    assert rejected / sims <= 0.07


# ---- statistics against oracles -------------------------------------------------------------


def test_loss_standard_error_equals_the_sample_standard_deviation_for_equal_lengths():
    rng = np.random.default_rng(6)
    for n in (2, 3, 7):
        sums = rng.gamma(3.0, 2.0, size=n) * 10
        mean, se = loss_with_se(sums, np.full(n, 10))
        assert mean == pytest.approx(sums.mean() / 10)
        assert se == pytest.approx(sums.std(ddof=1) / np.sqrt(n) / 10)


def test_loss_interval_resamples_the_token_counts_with_the_sentences():
    # A is better by exactly 0.5 nats on every token: every resample's per-token difference
    # is -0.5, however many tokens it holds, so the interval is the point itself.
    rng = np.random.default_rng(7)
    counts = rng.integers(2, 50, size=150)
    b = counts * rng.gamma(4.0, 1.0, size=150)
    r = paired_loss_test(b - 0.5 * counts, b, counts)
    assert r.delta == pytest.approx(-0.5)
    assert r.lo == pytest.approx(-0.5) and r.hi == pytest.approx(-0.5)
    assert r.p_value == pytest.approx(1 / 1001)  # no sign flip reaches the observed gap


def test_identical_systems_get_p_one():
    rng = np.random.default_rng(8)
    a, _, counts = _losses(rng, 50)
    same = paired_loss_test(a, a, counts)
    assert same.delta == 0 and same.p_value == 1.0 and same.lo == same.hi == 0
    r = random.Random(0)
    refs = _refs(40, r)
    hyps = _noisy(refs, 0.3, r)
    for result in paired_bleu_test(hyps, hyps, refs, resamples=100).values():
        assert result.delta == 0 and result.p_value == 1.0


def test_approximate_randomization_equals_sacrebleus_paired_ar():
    r = random.Random(9)
    refs = _refs(80, r)
    hyps_a, hyps_b = _noisy(refs, 0.2, r), _noisy(refs, 0.3, r)
    ours = paired_bleu_test(hyps_a, hyps_b, refs, resamples=500)
    _, theirs = PairedTest([("b", hyps_b), ("a", hyps_a)], {"BLEU": BLEU(), "chrF": CHRF()},
                           [refs], test_type="ar", n_samples=500)()
    for name, metric in (("BLEU", "bleu"), ("chrF2", "chrf")):
        assert ours[metric].a == pytest.approx(theirs[name][1].score)
        assert ours[metric].b == pytest.approx(theirs[name][0].score)
        # sacreBLEU counts only strictly larger shuffled differences; none ties here
        assert ours[metric].p_value == pytest.approx(theirs[name][1].p_value)
        assert ours[metric].lo < ours[metric].delta < ours[metric].hi
        assert ours[metric].test.startswith("approximate randomization")


def _brute_tau(x, y, pairs) -> float:
    """tau-b by counting the given pairs one by one."""
    num = tx = ty = 0
    for i, j in pairs:
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        num += sx * sy
        tx += sx != 0
        ty += sy != 0
    return num / np.sqrt(tx * ty)


def test_kendall_tau_b_equals_scipy_with_ties_and_brute_force_within_groups():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 5, size=30).astype(float)  # many ties
    y = x + rng.integers(0, 4, size=30)
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)
    groups = rng.integers(0, 3, size=30)
    within = [(i, j) for i, j in itertools.combinations(range(30), 2) if groups[i] == groups[j]]
    assert kendall_tau_b(x, y, groups=groups) == pytest.approx(_brute_tau(x, y, within))
    # an across-group trend that disagrees inside every group
    z = -x + 100 * groups
    assert kendall_tau_b(z, y + 100 * groups) > 0.3
    assert kendall_tau_b(z, y + 100 * groups, groups=groups) < 0


def test_rank_agreement_has_intervals_and_resamples_inside_groups():
    rng = np.random.default_rng(11)
    x = rng.normal(size=24)
    y = x + rng.normal(scale=0.8, size=24)
    r = rank_agreement(x, y, resamples=500)
    assert r.tau == pytest.approx(kendalltau(x, y).statistic)
    assert r.tau_lo < r.tau < r.tau_hi and r.rho_lo < r.rho < r.rho_hi
    assert rank_agreement(x, np.exp(x), resamples=50).tau == pytest.approx(1.0)
    groups = np.repeat([0, 1, 2], 8)
    g = rank_agreement(x, y, groups=groups, resamples=500)
    assert g.rho is None and g.tau_lo <= g.tau <= g.tau_hi
    assert g.tau == pytest.approx(kendall_tau_b(x, y, groups=groups))
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no group holds two"):
        rank_agreement(x[:3], y[:3], groups=[0, 1, 2])


def test_holm_adjusts_as_the_step_down_procedure():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02],
                                                           nan_ok=True)
    assert holm([0.9, 0.3]) == pytest.approx([0.9, 0.6])  # monotone in the sorted order
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
