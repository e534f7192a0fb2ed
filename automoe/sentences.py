"""Per-sentence scores of one model on one set of sentences, stored so that every paired
test and interval the tool reports can be recomputed by a reader (``scripts/
recompute_stats.py``).

One compressed NumPy archive per model (``<name>.npz``, read with ``allow_pickle=False``:
plain numeric arrays, nothing executable):

- ``loss``, ``nll``: [N] label-smoothed loss and negative log-likelihood sums per sentence
  (nats); ``tokens``: [N] labelled target tokens per sentence (EOS included);
- ``bleu_stats`` [N, 10], ``chrf_stats`` [N, 18] (when translations were scored): sacreBLEU's
  sufficient statistics per sentence (`automoe.stats.sentence_stats`), from which corpus
  BLEU/chrF of any subset of sentences follow.

Sentences are in corpus order, so two archives of the same sentences pair up row by row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automoe.io_utils import atomic_path
from automoe.stats import sentence_stats

if TYPE_CHECKING:
    from automoe.dev_scoring import SentenceScores

__all__ = ["sentence_arrays", "save_sentence_scores", "save_arrays", "load_sentence_scores",
           "SUFFIX"]

SUFFIX = ".npz"
_KEYS = ("loss", "nll", "tokens", "bleu_stats", "chrf_stats")


def sentence_arrays(sentences: SentenceScores, refs: list[str]) -> dict[str, np.ndarray]:
    """The arrays of the archive format above from a `automoe.dev_scoring.SentenceScores`
    (translations, when present, as their statistics against `refs`)."""

    arrays: dict[str, np.ndarray] = {
        "loss": np.asarray(sentences.loss, np.float64),
        "nll": np.asarray(sentences.nll, np.float64),
        "tokens": np.asarray(sentences.tokens, np.int64)}
    if sentences.hyps:
        stats = sentence_stats(sentences.hyps, refs)
        arrays.update(bleu_stats=stats["bleu"].astype(np.int64),
                      chrf_stats=stats["chrf"].astype(np.int64))
    return arrays


def save_sentence_scores(path: str | os.PathLike, sentences: SentenceScores, refs: list[str]) -> Path:
    """Writes `sentence_arrays` of `sentences` to ``path`` + ``.npz`` atomically."""
    return save_arrays(path, sentence_arrays(sentences, refs))


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Writes `arrays` (as `sentence_arrays` gives) to ``path`` + ``.npz`` atomically."""
    target = Path(os.fspath(path) + SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=SUFFIX) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # (numpy stubs: **kwds)
    return target


def load_sentence_scores(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` written by `save_sentence_scores`; ValueError naming the
    file when it is not one (unknown arrays, mismatched lengths, pickled objects)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a per-sentence score archive ({err})") from None
    unknown = sorted(set(arrays) - set(_KEYS))
    missing = [k for k in ("loss", "nll", "tokens") if k not in arrays]
    lengths = {len(a) for a in arrays.values()}
    if unknown or missing or len(lengths) != 1:
        raise ValueError(f"{path}: expected arrays {list(_KEYS)} of one length; unknown "
                         f"{unknown}, missing {missing}, lengths {sorted(lengths)}")
    return arrays
