"""Uncertainty of sentence-level metrics, calibrated paired significance tests and rank
correlations.

Every score the tool reports is measured on a finite set of sentences (or of subnets), so it
comes with its uncertainty:

- `loss_with_se`: a per-token dev loss (a ratio of sums over sentences) and its standard
  error over sentences (delta method for a ratio estimator, with the n/(n-1) correction).
- `paired_loss_test`: two models on the same sentences. The p-value comes from a sign-flip
  permutation test of the per-sentence loss differences; the interval of the difference from
  a paired percentile bootstrap of sentences.
- `paired_bleu_test`: BLEU and chrF of two systems. The p-value comes from approximate
  randomization (AR, as ``sacrebleu --paired-ar``: each sentence's statistics swapped between
  the systems with probability 1/2); the interval from sacreBLEU's paired bootstrap draws.
- `rank_agreement`, `tau_difference`: Kendall tau-b (pooled within groups, e.g. FLOPs
  bands, when `groups` is given) and Spearman rho between two scorings of the same items,
  with percentile bootstrap intervals over items, and the paired bootstrap test of the
  difference between two predictors' taus against the same target.

Why permutation tests for p-values: the paired bootstrap p-value that sacreBLEU and multeval
report (resampled |differences| minus their mean, compared with the observed |difference|)
is centred on the wrong distribution and rejects a true "no difference" about twice as often
as its nominal level (measured: 11.5% at 0.05). A permutation test draws from the null
itself: if the two systems do not differ, swapping their outputs on a sentence changes
nothing, so the observed difference is one draw among the swapped ones and the p-value
(with the +1 rule, ties counted as extreme) is valid for any number of resamples. Tests in
``tests/test_stats.py`` simulate the null and check the rejection rate.

Every resampling is seeded (sacreBLEU's default 12345 unless ``SACREBLEU_SEED`` says
otherwise), so every p-value and interval is a deterministic function of its inputs and can
be recomputed from the stored per-sentence scores (``scripts/recompute_stats.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_RESAMPLES", "bootstrap_seed", "loss_with_se", "PairedResult",
           "paired_loss_test", "paired_bleu_test", "paired_stats_test", "sentence_stats",
           "holm", "kendall_tau_b", "RankAgreement", "rank_agreement", "tau_difference",
           "LOSS_TEST", "METRIC_TEST"]

DEFAULT_RESAMPLES = 1000
LOSS_TEST = "sign-flip permutation of per-sentence loss differences"
METRIC_TEST = "approximate randomization of sentence statistics"
_CHUNK = 256  # resamples per vectorised block (bounds memory at [chunk, n, n] for taus)


def bootstrap_seed() -> int:
    """The seed of every resampling here: sacreBLEU's (``SACREBLEU_SEED``, default 12345)."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    return 12345 if seed.lower() == "none" else int(seed)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(bootstrap_seed() if seed is None else seed)


def _as_sums(sums: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sums, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    if s.shape != c.shape or s.ndim != 1:
        raise ValueError(f"per-sentence sums {s.shape} and token counts {c.shape} must be "
                         "1-D and of the same length")
    if len(s) == 0 or c.sum() <= 0:
        raise ValueError("no sentences (or no tokens) to average over")
    return s, c


def loss_with_se(sums: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray
                 ) -> tuple[float, float]:
    """Per-token mean ``sum(sums) / sum(counts)`` and its standard error over sentences.

    Args:
        sums: [N] per-sentence loss sums (nats).
        counts: [N] per-sentence labelled tokens.

    Sentences, not tokens, are the independent draws, so the mean is a ratio estimator; its
    delta-method variance is ``n / (n - 1) * sum_i (s_i - m c_i)^2 / (sum_i c_i)^2``. One
    sentence has no spread to estimate: the SE is NaN.
    """
    s, c = _as_sums(sums, counts)
    mean = float(s.sum() / c.sum())
    n = len(s)
    if n < 2:
        return mean, math.nan
    resid = s - mean * c
    se = math.sqrt(n / (n - 1) * float(np.sum(resid * resid))) / float(c.sum())
    return mean, se


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values of one family of tests (same order as given;
    NaN stays NaN and does not count as a test). Rejecting where the adjusted p < alpha
    keeps the family-wise error rate at alpha under any dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of system A against system B on the same sentences.

    Attributes:
        metric: what was compared ("loss", "bleu", "chrf").
        a, b: the two systems' scores on all sentences.
        delta: a - b.
        lo, hi: 95% percentile interval of a - b (paired bootstrap of sentences).
        p_value: two-sided p-value of "no difference" (permutation test, `test`).
        n: sentences.
        test: the test that gave `p_value`.
        resamples: permutations drawn for the p-value (and bootstrap resamples).
    """

    metric: str
    a: float
    b: float
    delta: float
    lo: float
    hi: float
    p_value: float
    n: int
    test: str
    resamples: int


def _permutation_p(null: np.ndarray, observed: float) -> float:
    """Two-sided permutation p-value ``(#{|t*| >= |t|} + 1) / (R + 1)``. Ties count as
    extreme (two identical systems get p = 1); "ties" allow for the rounding of sums taken
    in another order (relative 1e-9)."""
    threshold = abs(observed) * (1.0 - 1e-9)
    return float((np.sum(np.abs(null) >= threshold) + 1) / (len(null) + 1))


def _chunks(total: int) -> Iterator[int]:
    for start in range(0, total, _CHUNK):
        yield min(_CHUNK, total - start)


def paired_loss_test(a_sums: Sequence[float] | np.ndarray, b_sums: Sequence[float] | np.ndarray,
                     counts: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                     seed: int | None = None) -> PairedResult:
    """Per-token loss of A vs B on the same sentences (same targets, so the same counts).

    Args:
        a_sums, b_sums: [N] per-sentence loss sums of the two systems.
        counts: [N] labelled tokens per sentence.

    p-value: sign-flip permutation. Under "A and B do not differ", A's and B's losses on a
    sentence are exchangeable, so the per-sentence difference ``d_i`` is as likely as
    ``-d_i``; the statistic ``sum_i d_i / sum_i c_i`` is recomputed under `resamples` random
    sign vectors (the token count does not change). Interval: percentile bootstrap of the
    per-token difference, each resample divided by its own token count.
    """
    a, c = _as_sums(a_sums, counts)
    b, _ = _as_sums(b_sums, counts)
    if a.shape != b.shape:
        raise ValueError(f"systems scored on different sentences ({len(a)} vs {len(b)})")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    n, tokens = len(a), float(c.sum())
    d = a - b
    delta = float(d.sum() / tokens)
    rng = _rng(seed)
    flipped = np.concatenate([
        (np.where(rng.integers(0, 2, size=(k, n), dtype=bool), d, -d)).sum(1) / tokens
        for k in _chunks(resamples)])
    rng = _rng(seed)
    boot = np.concatenate([
        d[idx].sum(1) / c[idx].sum(1)
        for idx in (rng.integers(0, n, size=(k, n)) for k in _chunks(resamples))])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return PairedResult("loss", float(a.sum() / tokens), float(b.sum() / tokens), delta,
                        float(lo), float(hi), _permutation_p(flipped, delta), n, LOSS_TEST,
                        resamples)


def _metrics() -> dict[str, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU(), "chrf": CHRF()}


def sentence_stats(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, np.ndarray]:
    """sacreBLEU's sufficient statistics per sentence: ``{"bleu": [N, 10], "chrf": [N, 18]}``
    (BLEU: hypothesis and reference lengths, matched and total n-grams for n = 1..4; chrF:
    per character n-gram order, hypothesis/reference/matched counts). A corpus score is a
    function of their column sums, so these arrays are all a paired test needs."""
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"sentence statistics need as many hypotheses as references, and "
                         f"some: {len(hyps)} and {len(refs)}")
    return {name: np.asarray(m._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)
            for name, m in _metrics().items()}


def _bleu_scores(rows: np.ndarray) -> np.ndarray:
    """sacreBLEU's corpus BLEU (default settings: 4-gram, "exp" smoothing) of each row of
    summed statistics ([R, 10] -> [R]): the same arithmetic as
    ``BLEU._compute_score_from_stats``, for all rows at once."""
    sys_len, ref_len, correct, total = rows[:, 0], rows[:, 1], rows[:, 2:6], rows[:, 6:10]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(sys_len < ref_len,
                      np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        # "exp" smoothing: the k-th order without matches counts as 1 / (2^k total)
        halvings = np.cumsum(correct == 0, axis=1)
        prec = np.where(correct == 0, 100.0 / (2.0 ** halvings * total),
                        100.0 * correct / total)
        logs = np.log(prec)
    # no matches at all, or an order with no n-grams (and every order above it): 0
    dead = ~correct.any(1) | (np.cumsum(total == 0, axis=1) > 0).any(1)
    mean_log = (((logs[:, 0] + logs[:, 1]) + logs[:, 2]) + logs[:, 3]) / 4  # Python's order
    return np.where(dead, 0.0, bp * np.exp(np.where(dead, 0.0, mean_log)))


def _chrf_scores(rows: np.ndarray) -> np.ndarray:
    """sacreBLEU's corpus chrF (default settings: character 6-grams, beta 2, effective-order
    averaging) of each row of summed statistics ([R, 18] -> [R]): the same arithmetic as
    ``CHRF._compute_f_score``, for all rows at once."""
    hyp, ref, match = rows[:, 0::3], rows[:, 1::3], rows[:, 2::3]
    counted = (hyp > 0) & (ref > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(counted, match / hyp, 0.0)
        rec = np.where(counted, match / ref, 0.0)
    order = counted.sum(1)
    avg_prec, avg_rec = np.zeros(len(rows)), np.zeros(len(rows))
    for i in range(rows.shape[1] // 3):  # summed in sacreBLEU's order, bit for bit
        avg_prec, avg_rec = avg_prec + prec[:, i], avg_rec + rec[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_prec, avg_rec = avg_prec / order, avg_rec / order
        factor = 4.0  # beta ** 2
        score = (1 + factor) * avg_prec * avg_rec / ((factor * avg_prec) + avg_rec)
    return np.where((order > 0) & (avg_prec + avg_rec > 0), 100 * score, 0.0)


# sacreBLEU scores one row at a time in Python; a paired test scores 4R rows
_SCORERS = {"bleu": _bleu_scores, "chrf": _chrf_scores}


def paired_stats_test(name: str, a_stats: np.ndarray, b_stats: np.ndarray, *,
                      resamples: int = DEFAULT_RESAMPLES, seed: int | None = None
                      ) -> PairedResult:
    """BLEU or chrF (`name`) of A vs B from their per-sentence statistics ([N, K] each, as
    `sentence_stats` gives).

    p-value: approximate randomization with sacreBLEU's draws (``default_rng(seed)``, one
    swap mask per trial), counting ties as extreme (sacreBLEU counts only strictly larger
    differences, so two identical systems get p = 1/(R+1) there and 1 here). Interval:
    percentile bootstrap of A - B with sacreBLEU's paired-bootstrap index draws. Every
    resampled corpus is scored from its summed statistics by sacreBLEU's formula over
    arrays (`_bleu_scores`, `_chrf_scores`: equal to sacreBLEU's scores bit for bit).
    """
    if name not in _SCORERS:
        raise ValueError(f"no paired test for metric {name!r}; expected one of "
                         f"{sorted(_SCORERS)}")
    scores = _SCORERS[name]
    a, b = np.asarray(a_stats, np.float64), np.asarray(b_stats, np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"{name}: statistics of different or no sentences: {a.shape} vs "
                         f"{b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    n = len(a)
    score_a, score_b = (float(x) for x in scores(np.stack([a.sum(0), b.sum(0)])))
    delta = score_a - score_b
    swap = _rng(seed).integers(2, size=(resamples, n), dtype=bool)
    keep = (~swap).astype(np.float64)
    shuf_a = keep @ a + swap @ b
    shuf_b = swap @ a + keep @ b
    null = scores(shuf_a) - scores(shuf_b)
    idx = _rng(seed).choice(n, size=(resamples, n), replace=True)
    boot = scores(a[idx].sum(1)) - scores(b[idx].sum(1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return PairedResult(name, score_a, score_b, delta, float(lo), float(hi),
                        _permutation_p(null, delta), n, METRIC_TEST, resamples)


def paired_bleu_test(a_hyps: Sequence[str], b_hyps: Sequence[str], refs: Sequence[str], *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int | None = None
                     ) -> dict[str, PairedResult]:
    """BLEU and chrF of A vs B on the same references: `paired_stats_test` on their
    sacreBLEU sentence statistics. Returns ``{"bleu": ..., "chrf": ...}``."""
    a_hyps, b_hyps, refs = list(a_hyps), list(b_hyps), list(refs)
    if not len(a_hyps) == len(b_hyps) == len(refs) or not refs:
        raise ValueError(f"paired test needs the same non-empty sentences: {len(a_hyps)} "
                         f"and {len(b_hyps)} hypotheses, {len(refs)} references")
    sa, sb = sentence_stats(a_hyps, refs), sentence_stats(b_hyps, refs)
    return {m: paired_stats_test(m, sa[m], sb[m], resamples=resamples, seed=seed)
            for m in ("bleu", "chrf")}


# ---- rank correlations ----------------------------------------------------------------------


def _pair_mask(groups: np.ndarray | None, n: int) -> np.ndarray:
    """[n, n] bool: the pairs (i < j) that count (inside one group when `groups` is given)."""
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    if groups is None:
        return upper
    return upper & (groups[:, None] == groups[None, :])


def _tau_rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Kendall tau-b of x against y for each resample row of `idx` ([R, n] -> [R]), over
    the pairs `mask` ([n, n]) marks: (concordant - discordant) / sqrt(pairs untied in x *
    pairs untied in y). NaN where either series is constant over the counted pairs."""
    out = []
    for start in range(0, len(idx), _CHUNK):
        rows = idx[start:start + _CHUNK]
        xs, ys = x[rows], y[rows]
        sx = np.sign(xs[:, :, None] - xs[:, None, :]) * mask
        sy = np.sign(ys[:, :, None] - ys[:, None, :]) * mask
        num = (sx * sy).sum((1, 2))
        den = np.sqrt(np.abs(sx).sum((1, 2)) * np.abs(sy).sum((1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))
    return np.concatenate(out)


def _rho_rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman rho (Pearson of average ranks) for each resample row ([R, n] -> [R])."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def _check_groups(groups: Sequence[Any] | None, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups: expected one label per item ({n}), got shape {g.shape}")
    codes = np.unique(g, return_inverse=True)[1]
    if np.bincount(codes).max() < 2:
        raise ValueError("groups: no group holds two items, so no pair can be ranked")
    return codes


def _resample_rows(rng: np.random.Generator, n: int, groups: np.ndarray | None,
                   resamples: int) -> np.ndarray:
    """[resamples, n] bootstrap indices: items drawn with replacement, inside each group
    when `groups` is given (a stratified bootstrap keeps every group's size)."""
    if groups is None:
        return rng.integers(0, n, size=(resamples, n))
    idx = np.empty((resamples, n), dtype=np.int64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        idx[:, members] = members[rng.integers(0, len(members), size=(resamples, len(members)))]
    return idx


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                  groups: Sequence[Any] | None = None) -> float:
    """Kendall tau-b of `x` against `y` ([n] each); with `groups`, pooled over the pairs
    inside each group only (e.g. subnets of one FLOPs band), so that what separates the
    groups does not count. NaN when undefined."""
    xa, ya = _check_pairs(x, y)
    g = _check_groups(groups, len(xa))
    return float(_tau_rows(xa, ya, np.arange(len(xa))[None], _pair_mask(g, len(xa)))[0])


@dataclass(frozen=True)
class RankAgreement:
    """How well one scoring of n items ranks them as another does.

    Attributes:
        n: items.
        tau, tau_lo, tau_hi: Kendall tau-b (pooled within groups when grouped) and its 95%
            percentile bootstrap interval.
        rho, rho_lo, rho_hi: Spearman rho and its interval (None when grouped: it has no
            within-group pooled form).
        resamples: bootstrap resamples of items (with replacement) with a defined tau.
    """

    n: int
    tau: float
    tau_lo: float
    tau_hi: float
    rho: float | None
    rho_lo: float | None
    rho_hi: float | None
    resamples: int

    def to_dict(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _interval(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the finite `values` (NaN, NaN when there are none)."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def _check_pairs(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"rank agreement needs two equal-length 1-D series, got {xa.shape} "
                         f"and {ya.shape}")
    if len(xa) < 3 or not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError(f"rank agreement needs at least 3 finite pairs, got {len(xa)} "
                         f"({int((~np.isfinite(xa) | ~np.isfinite(ya)).sum())} not finite)")
    return xa, ya


def rank_agreement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                   groups: Sequence[Any] | None = None, resamples: int = 2000,
                   seed: int | None = None) -> RankAgreement:
    """Kendall tau-b and Spearman rho of `x` against `y` ([n] each), with percentile
    bootstrap intervals over the n items (resamples where a correlation is undefined are
    skipped; a constant series gives NaN). With `groups`, tau is pooled over within-group
    pairs and the bootstrap resamples inside each group."""
    xa, ya = _check_pairs(x, y)
    g = _check_groups(groups, len(xa))
    mask = _pair_mask(g, len(xa))
    tau = float(_tau_rows(xa, ya, np.arange(len(xa))[None], mask)[0])
    idx = _resample_rows(_rng(seed), len(xa), g, resamples)
    taus = _tau_rows(xa, ya, idx, mask)
    tlo, thi = _interval(taus)
    rho = rlo = rhi = None
    if g is None:
        from scipy.stats import spearmanr

        rho = (float(spearmanr(xa, ya).statistic) if np.ptp(xa) and np.ptp(ya) else math.nan)
        rlo, rhi = _interval(_rho_rows(xa, ya, idx))
    return RankAgreement(len(xa), tau, tlo, thi, rho, rlo, rhi, int(np.isfinite(taus).sum()))


def tau_difference(x1: Sequence[float] | np.ndarray, x2: Sequence[float] | np.ndarray,
                   y: Sequence[float] | np.ndarray, *,
                   groups: Sequence[Any] | None = None, resamples: int = 2000,
                   seed: int | None = None) -> dict[str, float]:
    """Does predictor `x1` rank `y` better than predictor `x2`? Paired bootstrap over items
    (inside groups when given) of tau(x1, y) - tau(x2, y).

    Returns ``{"delta", "lo", "hi", "p_value"}``: the difference, its 95% percentile
    interval, and the two-sided p-value ``2 * (#resamples on the far side of 0 + 1) /
    (R + 1)`` (capped at 1). Unlike the sentence-level tests this is a bootstrap, not a
    permutation test (two predictors on different scales cannot be swapped); simulated
    under the null it rejects at about the nominal rate from ~30 items and is conservative
    below (``tests/test_stats.py``).
    """
    a, ya = _check_pairs(x1, y)
    b, _ = _check_pairs(x2, y)
    g = _check_groups(groups, len(ya))
    mask = _pair_mask(g, len(ya))
    ident = np.arange(len(ya))[None]
    delta = float(_tau_rows(a, ya, ident, mask)[0] - _tau_rows(b, ya, ident, mask)[0])
    idx = _resample_rows(_rng(seed), len(ya), g, resamples)
    d = _tau_rows(a, ya, idx, mask) - _tau_rows(b, ya, idx, mask)
    d = d[np.isfinite(d)]
    if not np.isfinite(delta) or len(d) == 0:
        return {"delta": delta, "lo": math.nan, "hi": math.nan, "p_value": math.nan}
    lo, hi = _interval(d)
    far = np.sum(d <= 0) if delta > 0 else np.sum(d >= 0)
    return {"delta": delta, "lo": lo, "hi": hi,
            "p_value": float(min(1.0, 2 * (far + 1) / (len(d) + 1)))}
