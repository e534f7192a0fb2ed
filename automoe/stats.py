"""Uncertainty of sentence-level metrics, paired significance tests and rank correlations.

Every score the tool reports is measured on a finite set of sentences (or of subnets), so it
comes with its uncertainty:

- `loss_with_se`: a per-token dev loss (a ratio of sums over sentences) and its standard
  error over sentences (delta method for a ratio estimator, with the n/(n-1) correction).
- `paired_loss_test`: two models on the same sentences; paired bootstrap resampling of
  sentences (Koehn 2004), two-sided p-value, interval of the difference.
- `paired_bleu_test`: BLEU and chrF of two systems; sacreBLEU's own paired bootstrap
  (`sacrebleu.significance.PairedTest`), so p-values match ``sacrebleu --paired-bs``.
- `rank_agreement`: Kendall tau-b and Spearman rho between two scorings of the same items
  (scipy), with percentile bootstrap intervals over items, and the paired bootstrap of the
  difference between two predictors' taus against the same target.

Bootstrap seeds are fixed (sacreBLEU's default 12345 unless ``SACREBLEU_SEED`` says
otherwise), so every interval is a deterministic function of its inputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_RESAMPLES", "bootstrap_seed", "loss_with_se", "PairedResult",
           "paired_loss_test", "paired_bleu_test", "RankAgreement", "rank_agreement",
           "tau_difference"]

DEFAULT_RESAMPLES = 1000  # sacreBLEU's default for paired bootstrap


def bootstrap_seed() -> int:
    """The seed of every resampling here: sacreBLEU's (``SACREBLEU_SEED``, default 12345)."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    return 12345 if seed.lower() == "none" else int(seed)


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


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of system A against system B on the same sentences.

    Attributes:
        metric: what was compared ("loss", "bleu", "chrf").
        a, b: the two systems' scores on all sentences.
        delta: a - b.
        lo, hi: 95% percentile bootstrap interval of a - b.
        p_value: two-sided p-value of "no difference" (paired bootstrap).
        n: sentences.
    """

    metric: str
    a: float
    b: float
    delta: float
    lo: float
    hi: float
    p_value: float
    n: int


def _p_value(sample_diffs: np.ndarray, observed: float) -> float:
    """Two-sided paired-bootstrap p-value in sacreBLEU's (and multeval's) form: the share of
    centred resampled |differences| at or above the observed |difference|, with the +1
    rule. sacreBLEU counts strictly above, which gives two identical systems p = 1/(R+1),
    "significant"; counting ties makes that p = 1 and changes nothing else."""
    absd = np.abs(sample_diffs)
    centred = absd - absd.mean()
    return float(min(1.0, (np.sum(centred >= abs(observed)) + 1) / (len(sample_diffs) + 1)))


def paired_loss_test(a_sums: Sequence[float] | np.ndarray, b_sums: Sequence[float] | np.ndarray,
                     counts: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                     seed: int | None = None) -> PairedResult:
    """Per-token loss of A vs B on the same sentences (same targets, so the same counts).

    Args:
        a_sums, b_sums: [N] per-sentence loss sums of the two systems.
        counts: [N] labelled tokens per sentence.
    """
    a, c = _as_sums(a_sums, counts)
    b, _ = _as_sums(b_sums, counts)
    if a.shape != b.shape:
        raise ValueError(f"systems scored on different sentences ({len(a)} vs {len(b)})")
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    tokens = c[idx].sum(1)
    diffs = (a[idx].sum(1) - b[idx].sum(1)) / tokens
    mean_a, mean_b = float(a.sum() / c.sum()), float(b.sum() / c.sum())
    delta = mean_a - mean_b
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return PairedResult("loss", mean_a, mean_b, delta, float(lo), float(hi),
                        _p_value(diffs, delta), len(a))


def paired_bleu_test(a_hyps: Sequence[str], b_hyps: Sequence[str], refs: Sequence[str], *,
                     resamples: int = DEFAULT_RESAMPLES) -> dict[str, PairedResult]:
    """BLEU and chrF of A vs B by paired bootstrap resampling of sentences.

    The resampling is sacreBLEU's own (`sacrebleu.significance.PairedTest` with
    ``test_type="bs"``: the same sentence statistics, seed and index draws), so the p-values
    equal ``sacrebleu --paired-bs``'s; it is redone here because sacreBLEU reports the
    system's interval, not that of the difference. Returns ``{"bleu": ..., "chrf": ...}``.
    """
    from sacrebleu.metrics import BLEU, CHRF

    a_hyps, b_hyps, refs = list(a_hyps), list(b_hyps), list(refs)
    if not len(a_hyps) == len(b_hyps) == len(refs) or not refs:
        raise ValueError(f"paired test needs the same non-empty sentences: {len(a_hyps)} "
                         f"and {len(b_hyps)} hypotheses, {len(refs)} references")
    # sacreBLEU draws all indices once, from default_rng(seed), before any metric
    idx = np.random.default_rng(bootstrap_seed()).choice(
        len(refs), size=(resamples, len(refs)), replace=True)
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        a_stats = np.array(metric._extract_corpus_statistics(a_hyps, [refs]), dtype="float32")
        b_stats = np.array(metric._extract_corpus_statistics(b_hyps, [refs]), dtype="float32")
        a = metric._compute_score_from_stats(a_stats.sum(0)).score
        b = metric._compute_score_from_stats(b_stats.sum(0)).score
        sa = np.array([metric._compute_score_from_stats(s.sum(0)).score for s in a_stats[idx]])
        sb = np.array([metric._compute_score_from_stats(s.sum(0)).score for s in b_stats[idx]])
        lo, hi = np.percentile(sa - sb, [2.5, 97.5])
        out[name] = PairedResult(name, float(a), float(b), float(a - b), float(lo), float(hi),
                                 _p_value(sa - sb, a - b), len(refs))
    return out


@dataclass(frozen=True)
class RankAgreement:
    """How well one scoring of n items ranks them as another does.

    Attributes:
        n: items.
        tau, tau_lo, tau_hi: Kendall tau-b and its 95% percentile bootstrap interval.
        rho, rho_lo, rho_hi: Spearman rho and its interval.
        resamples: bootstrap resamples of items (with replacement).
    """

    n: int
    tau: float
    tau_lo: float
    tau_hi: float
    rho: float
    rho_lo: float
    rho_hi: float
    resamples: int

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _interval(values: list[float]) -> tuple[float, float]:
    """95% percentile interval of the finite `values` (NaN, NaN when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def _taus(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant series ranks nothing
        return math.nan, math.nan
    tau = kendalltau(x, y).statistic
    rho = spearmanr(x, y).statistic
    return float(tau), float(rho)


def _check_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"rank agreement needs two equal-length 1-D series, got {xa.shape} "
                         f"and {ya.shape}")
    if len(xa) < 3 or not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError(f"rank agreement needs at least 3 finite pairs, got {len(xa)} "
                         f"({int((~np.isfinite(xa) | ~np.isfinite(ya)).sum())} not finite)")
    return xa, ya


def rank_agreement(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000,
                   seed: int | None = None) -> RankAgreement:
    """Kendall tau-b and Spearman rho of `x` against `y` ([n] each), with percentile
    bootstrap intervals over the n items (resamples where either series is constant, so
    that a correlation is undefined, are skipped; a constant series gives NaN)."""
    xa, ya = _check_pairs(x, y)
    tau, rho = _taus(xa, ya)
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    taus, rhos = [], []
    for _ in range(resamples):
        i = rng.integers(0, len(xa), size=len(xa))
        if np.ptp(xa[i]) == 0 or np.ptp(ya[i]) == 0:
            continue
        t, r = _taus(xa[i], ya[i])
        taus.append(t)
        rhos.append(r)
    tlo, thi = _interval(taus)
    rlo, rhi = _interval(rhos)
    return RankAgreement(len(xa), tau, float(tlo), float(thi), rho, float(rlo), float(rhi),
                         len(taus))


def tau_difference(x1: Sequence[float], x2: Sequence[float], y: Sequence[float], *,
                   resamples: int = 2000, seed: int | None = None) -> dict[str, float]:
    """Does predictor `x1` rank `y` better than predictor `x2`? Paired bootstrap over items
    of tau(x1, y) - tau(x2, y): ``{"delta", "lo", "hi", "p_value"}`` (two-sided, the share
    of resamples on the other side of zero, doubled)."""
    a, ya = _check_pairs(x1, y)
    b, _ = _check_pairs(x2, y)
    delta = _taus(a, ya)[0] - _taus(b, ya)[0]
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(ya), size=len(ya))
        if min(np.ptp(a[i]), np.ptp(b[i]), np.ptp(ya[i])) == 0:
            continue
        diffs.append(_taus(a[i], ya[i])[0] - _taus(b[i], ya[i])[0])
    d = np.asarray(diffs)
    if not np.isfinite(delta) or len(d) == 0:
        return {"delta": float(delta), "lo": math.nan, "hi": math.nan, "p_value": math.nan}
    lo, hi = _interval(diffs)
    side = np.mean(d <= 0) if delta > 0 else np.mean(d >= 0)
    return {"delta": float(delta), "lo": float(lo), "hi": float(hi),
            "p_value": float(min(1.0, 2 * (side * len(d) + 1) / (len(d) + 1)))}
