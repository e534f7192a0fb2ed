"""Corpus BLEU and chrF with sacrebleu, on detokenised text, reported with its signature.

Scores are sacrebleu's defaults (BLEU: 13a tokenisation, exp smoothing, mixed case; chrF2),
so they compare across papers; the signature string says exactly how they were computed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

__all__ = ["corpus_scores"]


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], *, tokenize: str = "13a",
                  lowercase: bool = False) -> dict:
    """BLEU and chrF of detokenised hypotheses against one reference each.

    Returns ``{"bleu", "chrf", "signatures": {"bleu", "chrf"}, "bleu_detail", "chrf_detail",
    "n_sentences"}``; the *_detail strings are sacrebleu's one-line summaries (n-gram
    precisions, brevity penalty, lengths).
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
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": float(b.score), "chrf": float(c.score),
            "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
            "bleu_detail": str(b), "chrf_detail": str(c), "n_sentences": len(hyps)}
