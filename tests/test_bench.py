"""The search benchmarks' library (automoe.bench) and scripts, on tiny budgets: the genome
adapters are `GenomeOps`, every run makes exactly its budget of distinct evaluations, the
summaries are the seed statistics of automoe.seed_stats, and each script writes a JSON
whose summaries `automoe.recompute` makes again from the per-run table. The parts that
run pymoo or read NAS-Bench-Graph are skipped without them (the ``bench`` extra); the
benchmarks themselves are scripts, not tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from automoe.bench.report import summarise
from automoe.bench.runs import Budget, build_engine, run_engine
from automoe.recompute import recompute_bench
from automoe.seed_stats import median_interval, rank_sum_test
from automoe.stats import holm
from evolution import GenomeOps, GridOps, Objective

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grid_ops():
    return GridOps(n_var=4, levels=5)


@pytest.mark.parametrize("engine", ["nsga2", "hat-ga", "random"])
def test_engine_runs_make_exactly_their_budget_of_distinct_evaluations(engine):
    ops = _grid_ops()  # 625 genomes, so duplicates are proposed often
    seen: list[tuple[int, ...]] = []

    def evaluate(genomes):
        seen.extend(genomes)
        return [{"f1": float(sum(g)), "f2": float(sum(4 - x for x in g[:2]) + g[3])}
                for g in genomes]

    budget = Budget.for_evaluations(120, 10)
    objectives = (Objective("f1"), Objective("f2"))
    algo = build_engine(engine, ops, objectives, budget=budget)
    points = run_engine(algo, evaluate, budget=budget, seed=3)
    assert points.shape == (120, 2)
    assert len(set(seen)) == len(seen) >= 120  # the cache never re-scores a genome
    expected = [evaluate([g])[0] for g in seen[:120]]
    np.testing.assert_array_equal(points, [[m["f1"], m["f2"]] for m in expected])
    again = run_engine(build_engine(engine, ops, objectives, budget=budget),
                       lambda gs: [{"f1": float(sum(g)), "f2": float(sum(4 - x for x in g[:2])
                                                                     + g[3])} for g in gs],
                       budget=budget, seed=3)
    np.testing.assert_array_equal(points, again)


def test_bad_budgets_and_engines_are_one_clear_error():
    with pytest.raises(ValueError, match="population"):
        Budget.for_evaluations(100, 2)
    with pytest.raises(ValueError, match="unknown engine"):
        build_engine("cmaes", _grid_ops(), (Objective("f1"),),
                     budget=Budget.for_evaluations(10, 5))


def test_summarise_is_the_seed_statistics_with_holm_over_the_table():
    rng = np.random.default_rng(0)
    rows = [{"problem": p, "algorithm": a, "seed": s, "hv": float(rng.normal(shift))}
            for p in ("p1", "p2") for a, shift in (("ours", 0.5), ("base", 0.0))
            for s in range(10)]
    rows += [{"problem": "p1", "algorithm": "few", "seed": s, "hv": float(s)} for s in range(5)]
    out = {(r["problem"], r["algorithm"]): r
           for r in summarise(rows, value="hv", group="problem", baseline="base")}
    for p in ("p1", "p2"):
        ours = [r["hv"] for r in rows if r["problem"] == p and r["algorithm"] == "ours"]
        base = [r["hv"] for r in rows if r["problem"] == p and r["algorithm"] == "base"]
        mi, test = median_interval(ours), rank_sum_test(ours, base)
        rec = out[(p, "ours")]
        assert (rec["median"], rec["lo"], rec["hi"]) == (mi.median, mi.lo, mi.hi)
        assert (rec["p_value"], rec["superiority"]) == (test.p_value, test.superiority)
        assert rec["median_difference"] == pytest.approx(np.median(ours) - np.median(base))
        assert "p_value" not in out[(p, "base")]
    assert out[("p1", "few")]["lo"] is None  # 5 seeds: no 95% interval
    tested = [r for r in out.values() if "p_value" in r]
    assert [r["p_holm"] for r in tested] == holm([r["p_value"] for r in tested])
    per = {(r["problem"], r["algorithm"]): r for r in summarise(
        rows, value="hv", group="problem", baseline="base", holm_over="algorithm")}
    for algorithm in ("ours", "few"):  # one family per algorithm, over its problems
        family = [r for r in per.values() if r["algorithm"] == algorithm]
        assert [r["p_holm"] for r in family] == holm([r["p_value"] for r in family])
    with pytest.raises(ValueError, match="holm_over"):
        summarise(rows, value="hv", group="problem", baseline="base", holm_over="seed")


def test_bench_pymoo_writes_what_recompute_makes_again(tmp_path, capsys):
    pytest.importorskip("pymoo")
    pytest.importorskip("moocore")
    main = _script("bench_pymoo").main
    out = tmp_path / "pymoo"
    assert main(["--problems", "zdt1,dtlz2-3", "--seeds", "6", "--evaluations", "30",
                 "--population", "10", "--levels", "11", "--out", str(out), "--quiet"]) == 0
    table = (out / "hypervolumes.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 5 * 6
    assert all(",30," in line for line in table[1:])  # every run: 30 distinct evaluations
    assert recompute_bench(out / "bench_pymoo.json") == []
    assert "vs pymoo-grid" in capsys.readouterr().out
    assert main(["--problems", "zdt9", "--out", str(out)]) == 2
    assert "unknown problem 'zdt9'" in capsys.readouterr().err


def test_bench_pymoo_runs_the_mutation_variants_against_reused_baselines(tmp_path, capsys):
    """The diagnostic's form: the variants alone are run, the default NSGA-II and
    pymoo-grid come from an earlier record once a re-run of each reproduces it, and each
    variant is one Holm family over the problems."""
    pytest.importorskip("pymoo")
    pytest.importorskip("moocore")
    import json

    main = _script("bench_pymoo").main
    small = ["--problems", "zdt1,dtlz2-2", "--seeds", "6", "--evaluations", "30",
             "--population", "10", "--levels", "11", "--quiet"]
    first = tmp_path / "first"
    assert main([*small, "--algorithms", "nsga2,pymoo-grid", "--out", str(first)]) == 0
    out = tmp_path / "variants"
    assert main([*small, "--algorithms", "nsga2-rate,nsga2-local", "--baselines",
                 "pymoo-grid,nsga2", "--reuse", str(first / "bench_pymoo.json"),
                 "--holm-over", "algorithm", "--out", str(out)]) == 0
    record = json.loads((out / "bench_pymoo.json").read_text())
    before = json.loads((first / "bench_pymoo.json").read_text())
    assert record["reuse"]["algorithms"] == ["pymoo-grid", "nsga2"]
    assert [r["algorithm"] for r in record["reuse"]["reproduced"]] == ["pymoo-grid", "nsga2"]
    reused = [r for r in record["runs"] if r["algorithm"] in ("pymoo-grid", "nsga2")]
    assert sorted(map(json.dumps, reused)) == sorted(map(json.dumps, before["runs"]))
    assert {r["algorithm"] for r in record["runs"]} == {"nsga2-rate", "nsga2-local",
                                                        "pymoo-grid", "nsga2"}
    assert len(record["runs"]) == 2 * 4 * 6 and all(r["evaluations"] == 30
                                                   for r in record["runs"])
    for summary in record["summaries"]:
        assert summary["holm_over"] == "algorithm"
        for algorithm in {r["algorithm"] for r in summary["rows"] if "p_holm" in r}:
            family = [r for r in summary["rows"] if r["algorithm"] == algorithm]
            assert [r["p_holm"] for r in family] == holm([r["p_value"] for r in family])
    assert recompute_bench(out / "bench_pymoo.json") == []
    assert "p (Holm per algorithm)" in capsys.readouterr().out
    assert main([*small[:-1], "--levels", "21", "--algorithms", "nsga2-rate", "--baselines",
                 "nsga2", "--reuse", str(first / "bench_pymoo.json"), "--out",
                 str(out)]) == 2
    assert "other settings (levels: 11 there, 21 here)" in capsys.readouterr().err
    assert main([*small, "--algorithms", "nsga2-rate", "--baselines", "pymoo-real",
                 "--reuse", str(first / "bench_pymoo.json"), "--out", str(out)]) == 2
    assert "no run for 12 of the 12" in capsys.readouterr().err
    first_grid = next(r for r in before["runs"] if r["algorithm"] == "pymoo-grid")
    first_grid["hypervolume"] += 1e-12  # a record the code no longer reproduces
    (tmp_path / "edited.json").write_text(json.dumps(before))
    assert main([*small, "--algorithms", "nsga2-rate", "--baselines", "pymoo-grid",
                 "--reuse", str(tmp_path / "edited.json"), "--out", str(out)]) == 2
    assert "its runs cannot be reused" in capsys.readouterr().err


def test_nasbench_graph_genomes_cover_the_table_and_the_script_runs(tmp_path, capsys):
    pytest.importorskip("nas_bench_graph")
    pytest.importorskip("pymoo")
    from automoe.bench.nasbench_graph import GraphArchOps, _canonical, load_table

    table = load_table("cora")
    hashes = _canonical()
    assert len(hashes) == 9 ** 5 - 9 and set(hashes.values()) == set(table.accuracy)
    ops = GraphArchOps()
    assert isinstance(ops, GenomeOps)
    assert ops.key((0, 8, 8, 8, 8)) == "all-skip" and not ops.valid((3, 8, 8, 8, 8))
    main = _script("bench_nasbench_graph").main
    out = tmp_path / "nbg"
    assert main(["--datasets", "cora", "--seeds", "6", "--checkpoints", "10,40",
                 "--population", "10", "--out", str(out), "--quiet"]) == 0
    assert recompute_bench(out / "bench_nasbench_graph.json") == []
    shares = (out / "shares.csv").read_text().splitlines()
    assert len(shares) == 1 + 4 * 6
    rate = tmp_path / "rate"  # the variant against the default, reused once reproduced
    assert main(["--datasets", "cora", "--seeds", "6", "--checkpoints", "10,40",
                 "--population", "10", "--algorithms", "nsga2-rate", "--baselines", "nsga2",
                 "--reuse", str(out / "bench_nasbench_graph.json"), "--holm-over",
                 "algorithm", "--out", str(rate), "--quiet"]) == 0
    assert recompute_bench(rate / "bench_nasbench_graph.json") == []
    assert len((rate / "shares.csv").read_text().splitlines()) == 1 + 2 * 6
    assert main(["--algorithms", "nsga2-local", "--out", str(out)]) == 2
    assert main(["--datasets", "proteins", "--out", str(out)]) == 2
    assert "proteins" in capsys.readouterr().err
