"""Corpus BLEU and chrF with sacrebleu, on detokenised text, reported with its signature.

Scores are sacrebleu's defaults (BLEU: 13a tokenisation, exp smoothing, mixed case; chrF2),
so they compare across papers when the references are the original ones: callers pass a
split's `SplitData.references()` (the target lines as given, never the cleaned text). The
signature string says exactly how they were computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

__all__ = ["corpus_scores"]


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], *, tokenize: str = "13a",
                  lowercase: bool = False, n_bootstrap: int = 0) -> dict:
    """BLEU and chrF of detokenised hypotheses against one reference each.

    Returns ``{"bleu", "chrf", "signatures": {"bleu", "chrf"}, "bleu_detail", "chrf_detail",
    "n_sentences"}``; the *_detail strings are sacrebleu's one-line summaries (n-gram
    precisions, brevity penalty, lengths). With ``n_bootstrap > 1`` also ``bleu_lo``,
    ``bleu_hi``, ``chrf_lo``, ``chrf_hi``: sacreBLEU's own 95% bootstrap interval over
    sentences (``--confidence``: bootstrap mean +- half the 2.5-97.5 percentile range, seed
    ``SACREBLEU_SEED``, default 12345), and the signatures then name the resample count.
    """
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no sentences to score")
    for name, texts in (("hypothesis", hyps), ("reference", refs)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{name} {i} is {type(text).__name__}, expected str")
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    chrf = CHRF(lowercase=lowercase)
    if n_bootstrap < 0 or n_bootstrap == 1:
        raise ValueError(f"n_bootstrap must be 0 (no interval) or >= 2, got {n_bootstrap}")
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    out: dict[str, Any] = {"bleu": float(b.score), "chrf": float(c.score),
           "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
           "bleu_detail": str(b), "chrf_detail": str(c), "n_sentences": len(hyps)}
    if n_bootstrap > 1:
        for name, metric in (("bleu", bleu), ("chrf", chrf)):
            lo, hi, signature = _bootstrap_interval(metric, hyps, refs, n_bootstrap)
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
            out["signatures"][name] = signature
    return out


def _bootstrap_interval(metric, hyps: list[str], refs: list[str], n: int
                        ) -> tuple[float, float, str]:
    """sacreBLEU's ``--confidence`` interval: `corpus_score(n_bootstrap=n)` resamples the
    sentence statistics and reports mean +- half the 2.5-97.5 percentile range. Its own
    ``Score.estimate_ci`` fails on chrF when a resample scores exactly 0 (it mixes Python
    and numpy floats in ``statistics.mean``), so the same resampling and estimate are called
    through sacreBLEU's numpy functions instead."""
    import numpy as np
    from sacrebleu.significance import _bootstrap_resample, estimate_ci

    stats = metric._extract_corpus_statistics(hyps, [refs])
    seed, scores = _bootstrap_resample(stats, metric, n)
    mean, half = estimate_ci(np.array([float(s.score) for s in scores]))
    signature = metric.get_signature()
    signature.update("bs", n)
    signature.update("seed", seed)
    return float(mean - half), float(mean + half), str(signature)
