"""Every committed claim that keeps its per-sentence scores (or per-run table) recomputes
from them: the p-values, intervals and rank statistics under results/
(scripts/recompute_stats.py)."""

from __future__ import annotations

from pathlib import Path

from automoe.recompute import recompute_all

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_committed_results_recompute_from_their_per_sentence_scores():
    checked, mismatches = recompute_all(RESULTS)
    assert RESULTS / "demo" / "search" / "comparisons.csv" in checked
    assert RESULTS / "bands" / "fidelity" / "fidelity.json" in checked
    assert RESULTS / "bands-1200" / "fidelity" / "fidelity.json" in checked
    # the supernet-training variants: each one's study and the comparison of all of them
    assert RESULTS / "bands-1200" / "fidelity-few-shot" / "fidelity.json" in checked
    assert RESULTS / "bands-1200" / "variants.json" in checked
    assert RESULTS / "pymoo" / "bench_pymoo.json" in checked  # from its per-run table
    assert RESULTS / "nasbench_graph" / "bench_nasbench_graph.json" in checked
    # the mutation diagnostic: its variants' runs beside the reused baseline runs
    assert RESULTS / "pymoo" / "diagnostic" / "bench_pymoo.json" in checked
    assert RESULTS / "nasbench_graph" / "diagnostic" / "bench_nasbench_graph.json" in checked
    assert mismatches == []


def test_committed_run_directories_read_back_through_their_owner():
    """Run dirs written by earlier versions (a search, a study's searches, fidelity studies)
    read with the one reader, plot, and name their objectives."""
    from automoe.plots import default_pairs, load_run
    from automoe.run_dir import RunDir, read_run

    runs = sorted({p.parent for p in RESULTS.rglob("search.json")
                   if (p.parent / "candidates.csv").is_file()})
    assert RESULTS / "demo" / "search" in runs and RESULTS / "bands" / "fidelity" in runs
    for run in runs:
        table = read_run(run, need_objectives=True)
        assert table.candidates["key"].str.fullmatch(r"[0-9a-f]{16}").all(), run
        assert [o.name for o in table.objectives], run
        assert default_pairs([load_run(run)]), run
        assert RunDir.at(run).read_settings()["data"], run
