"""automoe.bleu against sacrebleu's own functions and a naive BLEU written here."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import sacrebleu

from automoe.bleu import corpus_scores

HYPS = ["the cat sat on the mat today", "a quick brown fox jumps over the dog",
        "Die Katze sitzt auf der Matte.", "ich habe heute keine Zeit"]
REFS = ["the cat sat on a mat today", "the quick brown fox jumps over the lazy dog",
        "Die Katze saß auf der Matte.", "ich habe heute leider keine Zeit"]


def naive_bleu(hyps: list[str], refs: list[str]) -> float:
    """BLEU-4 for whitespace-tokenised text where every n-gram order has a match."""
    match, total = [0] * 4, [0] * 4
    hyp_len = sum(len(h.split()) for h in hyps)
    ref_len = sum(len(r.split()) for r in refs)
    for h, r in zip(hyps, refs, strict=True):
        hw, rw = h.split(), r.split()
        for n in range(1, 5):
            hc = Counter(tuple(hw[i:i + n]) for i in range(len(hw) - n + 1))
            rc = Counter(tuple(rw[i:i + n]) for i in range(len(rw) - n + 1))
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(0, len(hw) - n + 1)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(sum(math.log(m / t) for m, t in zip(match, total, strict=True)) / 4)


def test_matches_sacrebleu_and_a_naive_bleu():
    lower = [h.lower().replace(".", "") for h in HYPS]
    lower_refs = [r.lower().replace(".", "") for r in REFS]
    scores = corpus_scores(lower, lower_refs)
    assert scores["bleu"] == pytest.approx(naive_bleu(lower, lower_refs), abs=1e-9)
    scores = corpus_scores(HYPS, REFS)
    assert scores["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert scores["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert scores["signatures"]["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    assert scores["n_sentences"] == 4 and scores["bleu_detail"].startswith("BLEU = ")
    assert corpus_scores(REFS, REFS)["bleu"] == pytest.approx(100.0)


def test_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no sentences"):
        corpus_scores([], [])
    with pytest.raises(ValueError, match="hypothesis 1 is list"):
        corpus_scores(["a", ["b"]], ["a", "b"])
