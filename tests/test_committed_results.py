"""Every committed claim that keeps its per-sentence scores (or per-run table) recomputes
from them: the p-values, intervals and rank statistics under results/
(scripts/recompute_stats.py)."""

from __future__ import annotations

from pathlib import Path

from automoe.recompute import recompute_all

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_committed_results_recompute_from_their_per_sentence_scores():
    checked, mismatches = recompute_all(RESULTS)
    assert RESULTS / "bands" / "fidelity" / "fidelity.json" in checked
    assert RESULTS / "pymoo" / "bench_pymoo.json" in checked  # from its per-run table
    assert RESULTS / "nasbench_graph" / "bench_nasbench_graph.json" in checked
    assert mismatches == []
