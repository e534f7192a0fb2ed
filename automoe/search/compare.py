"""Paired significance tests of the front against the space's reference subnets.

A search reports that a front subnet is better or worse than a baseline (``largest``,
``largest-dense``, ...) only through a paired test on the same dev sentences: p-values by
permutation tests (sign flips for dev loss, approximate randomization for BLEU and chrF),
intervals by the paired bootstrap of sentences (`automoe.stats`). Both systems are scored in this process with the search's own
`DevScorer` on the supernet's inherited weights, always with translations (so a search on
``loss`` still reports the front's BLEU with its interval).

``RUN_DIR/comparisons.csv``: one row per (front subnet, baseline) with the subnet's own
scores and intervals, the baseline's (suffix ``_baseline``), and per metric ``<m>_delta`` (subnet - baseline),
``<m>_delta_lo``/``<m>_delta_hi`` (95% paired bootstrap interval), ``<m>_p`` (two-sided
p-value of a permutation test, `automoe.stats`) and ``<m>_p_holm`` (Holm-adjusted over the
family of every row of the table for that metric). Each compared system's per-sentence
scores are kept in ``RUN_DIR/sentences/comparisons/KEY.npz``, from which
``scripts/recompute_stats.py`` recomputes every row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from automoe.run_dir import COMPARISONS, RunDir
from automoe.sentences import save_arrays, sentence_arrays
from automoe.stats import holm, paired_loss_test, paired_stats_test

__all__ = ["COMPARISONS", "SENTENCES", "compare_rows", "paired_row", "with_holm",
           "write_comparisons"]

SENTENCES = "sentences/comparisons"  # per-sentence scores of every compared system
_METRICS = ("loss", "bleu", "chrf")
_INTERVALS = ("loss_se", "bleu_lo", "bleu_hi", "chrf_lo", "chrf_hi")


def compare_rows(front: Mapping[str, Any], baselines: Mapping[str, Any], scorer: Any, *,
                 sentences: Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Paired tests of every front subnet against every baseline.

    Args:
        front: key -> `SubnetConfig` of the front subnets.
        baselines: name -> `SubnetConfig` of the references.
        scorer: a `CandidateScorer` (``.model`` the supernet, ``.dev`` a `DevScorer` that
            translates).
        sentences: where each system's per-sentence scores go (``KEY.npz``,
            `automoe.sentences`), so that the table can be recomputed; None: not kept.
        progress: a progress bar over the systems scored (stderr).
    """
    from tqdm.auto import tqdm


    dev = scorer.dev
    arrays: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, float]] = {}
    # Decoding the whole dev split per subnet is the slow part: show it.
    for config in tqdm([*front.values(), *baselines.values()], desc="comparisons",
                       unit="subnet", leave=False, disable=not progress):
        key = config.key()
        if key not in arrays:
            outputs = dev.sentences(scorer.model, config)
            metrics[key] = dev.metrics(outputs)
            arrays[key] = sentence_arrays(outputs, dev.refs)
            if sentences is not None:
                save_arrays(sentences / key, arrays[key])
    rows = []
    for key in front:
        for name, base in baselines.items():
            row: dict[str, Any] = {"key": key, "baseline": name, "baseline_key": base.key(),
                                   "sentences": dev.n}
            tests = paired_row(arrays[key], arrays[base.key()])
            for m in _METRICS:
                row.update({m: metrics[key][m], f"{m}_baseline": metrics[base.key()][m]})
                row.update({k: tests[k] for k in (f"{m}_delta", f"{m}_delta_lo",
                                                  f"{m}_delta_hi", f"{m}_p")})
            for suffix, scores in (("", metrics[key]), ("_baseline", metrics[base.key()])):
                row.update({k + suffix: scores[k] for k in _INTERVALS if k in scores})
            rows.append(row)
    return with_holm(pd.DataFrame(rows), _METRICS)


def paired_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """The paired-test columns of one comparison row (``<m>_delta``, ``_delta_lo``,
    ``_delta_hi``, ``_p`` for loss, BLEU, chrF) from two systems' per-sentence archives
    (`automoe.sentences.load_sentence_scores`): what `compare_rows` computes from their
    outputs, for recomputing a table."""

    tests = {"loss": paired_loss_test(a["loss"], b["loss"], a["tokens"]),
             **{m: paired_stats_test(m, a[f"{m}_stats"], b[f"{m}_stats"])
                for m in ("bleu", "chrf")}}
    row: dict[str, float] = {}
    for m, t in tests.items():
        row.update({f"{m}_delta": t.delta, f"{m}_delta_lo": t.lo, f"{m}_delta_hi": t.hi,
                    f"{m}_p": t.p_value})
    return row


def with_holm(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """`table` with ``<m>_p_holm`` after each ``<m>_p`` column: Holm's adjustment over all
    its rows (one family per metric), and a ``holm_family`` column that says so."""

    out = table.copy()
    for m in metrics:
        if f"{m}_p" in out:
            out.insert(out.columns.get_loc(f"{m}_p") + 1, f"{m}_p_holm",
                       holm(out[f"{m}_p"].tolist()) if len(out) else [])
    out["holm_family"] = (f"per metric, the {len(out)} rows of this table "
                          f"({', '.join(m for m in metrics if f'{m}_p' in out)})")
    return out


def write_comparisons(run_dir: str | Path, front: Mapping[str, Any],
                      baselines: Mapping[str, Any], factory: Any, state: Any, *,
                      progress: bool = True) -> Path:
    """Builds a translating scorer from the search's `CandidateScorerFactory` and the
    supernet state, runs `compare_rows` and writes ``RUN_DIR/comparisons.csv`` atomically."""
    settings = dataclasses.replace(factory.settings, bleu=True)
    scorer = dataclasses.replace(factory, settings=settings)(state)
    table = compare_rows(front, baselines, scorer, sentences=Path(run_dir) / SENTENCES,
                         progress=progress)
    return RunDir.at(run_dir).write_table(COMPARISONS, table)
