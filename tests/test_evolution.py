"""The search algorithms on synthetic problems with known answers.

Oracles: the closed-form / enumerated Pareto front of `DiscreteFront`, an independent
sort for the GA's parent selection, replaying the seed for the rejection error message,
uninterrupted runs for resumption, and a counting evaluator for the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_problems import DiscreteFront

from evolution import (
    NSGA2,
    GASettings,
    GeneticAlgorithm,
    GridOps,
    NSGA2Settings,
    RandomSearch,
    RandomSettings,
    SearchAlgorithm,
    run_search,
    step,
)
from evolution.objectives import Constraint, Objective
from evolution.pareto import hypervolume
from evolution.state import Candidate

REPO = Path(__file__).resolve().parents[1]
PROBLEM = DiscreteFront(n_genes=5, levels=8, n_objectives=2)
REFERENCE = {"f0": 40.0, "f1": 40.0}


class CountingEvaluator:
    """Scores with the problem's closed form and remembers every batch it was given."""

    def __init__(self, problem: DiscreteFront = PROBLEM, drop: tuple[str, ...] = ()) -> None:
        self.problem = problem
        self.drop = drop
        self.batches: list[list[tuple[int, ...]]] = []

    def __call__(self, genomes):
        self.batches.append(list(genomes))
        out = []
        for g in genomes:
            m = self.problem.metrics(g)
            out.append({k: v for k, v in m.items() if k not in self.drop})
        return out

    @property
    def genomes(self) -> list[tuple[int, ...]]:
        return [g for b in self.batches for g in b]


def make_algo(
    name: str, problem: DiscreteFront = PROBLEM, iterations: int = 8, **kw
) -> SearchAlgorithm:
    if name == "hat-ga":
        settings = GASettings(
            population_size=20,
            parent_size=4,
            mutation_size=8,
            crossover_size=8,
            iterations=iterations,
        )
        objectives = (Objective("g", "min"), *problem.objectives)
        return GeneticAlgorithm(problem.ops, objectives=objectives, settings=settings, **kw)
    if name == "nsga2":
        settings = NSGA2Settings(population_size=16, iterations=iterations)
        return NSGA2(
            problem.ops, objectives=problem.objectives, settings=settings, reference=REFERENCE, **kw
        )
    settings = RandomSettings(batch_size=16, iterations=iterations)
    return RandomSearch(
        problem.ops, objectives=problem.objectives, settings=settings, reference=REFERENCE, **kw
    )


ALGOS = ["hat-ga", "nsga2", "random"]


def dumped(algo: SearchAlgorithm, result) -> str:
    return json.dumps(algo.dump(result.state), sort_keys=True)


def front_vectors(entries, names=("f0", "f1")) -> set[tuple[float, ...]]:
    return {tuple(e.metrics[n] for n in names) for e in entries}


# ---- objectives and constraints ------------------------------------------------------


def test_objective_and_constraint_basics():
    assert Objective("bleu", "maximize").to_min(30.0) == -30.0
    assert Objective("flops").to_min(float("nan")) == float("inf")
    assert Objective("bleu", "max") == Objective("bleu", "maximize")
    c = Constraint("flops", "<=", 2e9)
    assert (c.name, c.op, c.bound, str(c)) == ("flops", "<=", 2e9, "flops<=2e+09")
    assert c.violation(1e9) == 0.0 and c.violation(3e9) == pytest.approx(0.5)
    assert Constraint("bleu", ">=", 20).violation(15) == pytest.approx(0.25)
    assert Constraint("x", "<=", 0).violation(2.0) == 2.0
    with pytest.raises(ValueError, match="direction"):
        Objective("bleu", "up")
    with pytest.raises(ValueError, match="'<=' or '>='"):
        Constraint("flops", "<", 1)
    with pytest.raises(ValueError, match="not a number"):
        Constraint("flops", "<=", "2G")


def test_settings_are_validated():
    with pytest.raises(ValueError, match="population_size 100 must equal"):
        GASettings(population_size=100)
    with pytest.raises(ValueError, match="mutation_prob"):
        NSGA2Settings(mutation_prob=1.5)
    with pytest.raises(ValueError, match="at least one objective"):
        NSGA2(PROBLEM.ops, objectives=())
    with pytest.raises(ValueError, match="reference point lacks"):
        NSGA2(PROBLEM.ops, objectives=PROBLEM.objectives, reference={"f0": 1.0})


# ---- HAT's GA, mechanics ---------------------------------------------------------------


def test_ga_follows_hat_selection_and_composition():
    evaluator = CountingEvaluator()
    algo = make_algo("hat-ga", iterations=10)
    result = run_search(algo, evaluator, seed=3)
    by_gen: dict[int, list] = {}
    for r in result.records:
        by_gen.setdefault(r.generation, []).append(r)
    assert sorted(by_gen) == list(range(10))
    assert [r.origin for r in by_gen[0]] == ["sample"] * 20
    best_per_gen = []
    for t in range(1, 10):
        origins = [r.origin for r in by_gen[t]]
        assert origins == ["parent"] * 4 + ["mutation"] * 8 + ["crossover"] * 8
        prev = by_gen[t - 1]
        ranked = sorted(range(len(prev)), key=lambda i: (PROBLEM.metrics(prev[i].genome)["g"], i))
        expected_parents = [prev[i].key for i in ranked[:4]]
        parents = [r.genome for r in by_gen[t][:4]]
        assert [r.key for r in by_gen[t][:4]] == expected_parents
        assert all(r.cached for r in by_gen[t][:4])  # re-scored parents cost nothing
        for child in (r.genome for r in by_gen[t] if r.origin == "crossover"):
            assert any(
                all(c in (parents[i][k], parents[j][k]) for k, c in enumerate(child))
                for i in range(4)
                for j in range(4)
                if i != j
            )
        best_per_gen.append(min(PROBLEM.metrics(r.genome)["g"] for r in by_gen[t]))
    assert best_per_gen == sorted(best_per_gen, reverse=True)  # elitism: never worse
    assert result.best.metrics["g"] == min(e.metrics["g"] for e in result.entries)


def test_ga_finds_the_optimum():
    best = [
        run_search(make_algo("hat-ga", iterations=20), CountingEvaluator(), seed=s).best
        for s in range(5)
    ]
    g = [b.metrics["g"] for b in best]  # 400 evaluations of 8^5 = 32768 genomes
    assert sum(v == 0 for v in g) >= 4 and max(g) <= 1, g


def test_ga_without_dedup_repeats_but_never_reevaluates():
    evaluator = CountingEvaluator()
    result = run_search(make_algo("hat-ga", iterations=10), evaluator, seed=0)
    keys = [PROBLEM.ops.key(g) for g in evaluator.genomes]
    assert len(keys) == len(set(keys)) == result.evaluations
    assert len(evaluator.batches) == 10  # one evaluator call per generation
    assert sum(r.cached for r in result.records) == len(result.records) - result.evaluations
    assert sum(r.cached and r.origin != "parent" for r in result.records) > 0  # HAT: no dedup


# ---- NSGA-II: recovering a known front, beating random search ---------------------------


@pytest.mark.parametrize("seed", range(4))
def test_nsga2_recovers_the_true_front_2d(seed):
    algo = NSGA2(
        PROBLEM.ops,
        objectives=PROBLEM.objectives,
        settings=NSGA2Settings(population_size=30, iterations=20, mutation_prob=0.2),
    )
    result = run_search(algo, CountingEvaluator(), seed=seed)
    assert result.evaluations <= 600  # out of 8^5 = 32768 genomes
    assert front_vectors(result.front) == PROBLEM.true_front()  # all 8, nothing else


class ParentRecorder(GridOps):
    """GridOps that remembers every genome handed to `mutate` (a tournament winner
    when crossover_prob is 0)."""

    def __init__(self, n_genes: int, levels: int) -> None:
        super().__init__(n_genes, levels)
        object.__setattr__(self, "parents", [])

    def mutate(self, genome, prob, rng):
        self.parents.append(genome)
        return super().mutate(genome, prob, rng)


def test_nsga2_tournament_prefers_the_less_crowded_of_one_front():
    # Five points on the line f0 + f1 = 10: one front. Crowding distances (normalised):
    # x=0 and x=10 inf (boundaries), x=1 0.4, x=2 1.0, x=6 1.6; x=1 is the most crowded,
    # so it loses every binary tournament it enters and is never a parent.
    ops = ParentRecorder(1, 11)
    algo = NSGA2(
        ops,
        objectives=(Objective("f0", "min"), Objective("f1", "min")),
        settings=NSGA2Settings(population_size=5, offspring_size=300, crossover_prob=0.0,
                               mutation_prob=0.5, dedup=False),
    )
    state = algo.init(0)
    genomes = [(0,), (1,), (2,), (6,), (10,)]
    batch = [Candidate(g, ops.key(g), "sample") for g in genomes]
    algo.tell(state, batch, {c.key: {"f0": c.genome[0], "f1": 10 - c.genome[0]} for c in batch})
    rank, crowd = algo.rank_and_crowding(state)
    assert not rank.any() and sorted(crowd)[:3] == pytest.approx([0.4, 1.0, 1.6])
    algo.ask(state)
    wins = {g: ops.parents.count(g) for g in genomes}
    assert len(ops.parents) == 300 and wins[(1,)] == 0, wins
    assert wins[(0,)] > wins[(2,)] and wins[(10,)] > wins[(2,)] and wins[(6,)] > 0, wins


def test_nsga2_recovers_most_of_the_true_front_3d():
    problem = DiscreteFront(n_genes=5, levels=5, n_objectives=3)
    algo = NSGA2(
        problem.ops,
        objectives=problem.objectives,
        settings=NSGA2Settings(population_size=40, iterations=20),
    )
    result = run_search(algo, CountingEvaluator(problem), seed=0)
    found = front_vectors(result.front, ("f0", "f1", "f2"))
    true = problem.true_front()
    assert found <= true
    assert len(found) >= 0.9 * len(true)  # 25 points; a population of 40 holds them all


def test_nsga2_beats_random_search_in_hypervolume_at_equal_evaluations():
    problem = DiscreteFront(n_genes=6, levels=10, n_objectives=2)
    ref = {"f0": 60.0, "f1": 60.0}
    wins, nsga_hv, random_hv = 0, [], []
    for seed in range(5):
        nsga = run_search(
            NSGA2(
                problem.ops,
                objectives=problem.objectives,
                reference=ref,
                settings=NSGA2Settings(population_size=20, iterations=12),
            ),
            CountingEvaluator(problem),
            seed=seed,
        )
        budget = nsga.evaluations
        rand = run_search(
            RandomSearch(
                problem.ops,
                objectives=problem.objectives,
                reference=ref,
                settings=RandomSettings(batch_size=budget, iterations=1),
            ),
            CountingEvaluator(problem),
            seed=seed,
        )
        assert rand.evaluations == budget
        nsga_hv.append(nsga.history[-1].hypervolume)
        random_hv.append(rand.history[-1].hypervolume)
        wins += nsga_hv[-1] > random_hv[-1]
    assert sum(nsga_hv) / 5 > sum(random_hv) / 5
    assert wins >= 4, (nsga_hv, random_hv)


# ---- constraints ------------------------------------------------------------------------


def brute_constrained_front(problem, constraint):
    feasible = []
    for g in problem.ops.all_genomes():
        m = problem.metrics(g)
        if constraint.satisfied(m[constraint.name]):
            feasible.append((m["f0"], m["f1"]))
    return {
        p for p in feasible if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in feasible)
    }


@pytest.mark.parametrize("name", ALGOS)
def test_constraint_by_rejection_is_never_violated(name):
    bound = Constraint("cost", "<=", 14)
    evaluator = CountingEvaluator(drop=("cost",))  # cost comes from the pre_filter only
    algo = make_algo(name, constraints=[bound], pre_filter=lambda g: {"cost": float(sum(g))})
    result = run_search(algo, evaluator, seed=1)
    assert all(sum(g) <= 14 for g in evaluator.genomes)  # infeasible ones never evaluated
    assert all(r.metrics["cost"] == sum(r.genome) for r in result.records)  # merged
    assert all(row["feasible"] for row in result.rows())


def test_nsga2_finds_the_constrained_front():
    problem = DiscreteFront(n_genes=4, levels=6, n_objectives=2)
    constraint = Constraint("cost", "<=", 9)
    algo = NSGA2(
        problem.ops,
        objectives=problem.objectives,
        constraints=[constraint],
        pre_filter=lambda g: {"cost": float(sum(g))},
        settings=NSGA2Settings(population_size=16, iterations=20),
    )
    result = run_search(algo, CountingEvaluator(problem), seed=0)
    expected = brute_constrained_front(problem, constraint)
    assert expected != {v for v in problem.true_front()}  # the constraint matters
    assert front_vectors(result.front) == expected


def test_constraint_on_evaluated_metrics_uses_constraint_domination():
    # f1 <= 4 can only be checked after evaluation, and about 1 random genome in 300 meets
    # it: infeasible candidates are scored but rank by their violation behind every
    # feasible one, which drives the population into the feasible region.
    constraint = Constraint("f1", "<=", 4)
    expected = brute_constrained_front(PROBLEM, constraint)
    exact = 0
    for seed in range(4):
        algo = NSGA2(
            PROBLEM.ops,
            objectives=PROBLEM.objectives,
            constraints=[constraint],
            settings=NSGA2Settings(population_size=30, iterations=25, mutation_prob=0.2),
        )
        result = run_search(algo, CountingEvaluator(), seed=seed)
        assert sum(not row["feasible"] for row in result.rows()) > result.evaluations / 2
        assert all(result.state.archive[k].metrics["f1"] <= 4 for k in result.state.population)
        found = front_vectors(result.front)
        assert found <= expected
        exact += found == expected
    assert exact >= 3


def test_ga_ranks_feasible_parents_first():
    constraint = Constraint("f1", "<=", 4)
    algo = make_algo("hat-ga", iterations=15, constraints=[constraint])
    result = run_search(algo, CountingEvaluator(), seed=0)
    state = result.state
    for t in range(1, 15):  # parents of generation t, from the records of generation t-1
        prev = [r for r in result.records if r.generation == t - 1]
        parents = [r.key for r in result.records if r.generation == t and r.origin == "parent"]
        ranked = sorted(
            range(len(prev)),
            key=lambda i: (constraint.violation(prev[i].metrics["f1"]), prev[i].metrics["g"], i),
        )
        assert parents == [prev[i].key for i in ranked[:4]]
    assert all(e.metrics["f1"] <= 4 for e in result.front)
    assert all(state.archive[k].metrics["f1"] <= 4 for k in algo.parents(state))


def test_unsatisfiable_constraint_fails_with_numbers():
    algo = NSGA2(
        PROBLEM.ops,
        objectives=PROBLEM.objectives,
        constraints=[Constraint("cost", "<=", 2)],
        pre_filter=lambda g: {"cost": float(sum(g))},
        settings=NSGA2Settings(population_size=16, iterations=8, max_tries=50),
    )
    with pytest.raises(ValueError) as err:
        run_search(algo, CountingEvaluator(), seed=7)
    # replay the seed: the first 50 samples are what the search saw
    rng = random.Random(7)
    smallest = min(sum(PROBLEM.ops.sample(rng)) for _ in range(50))
    assert smallest > 2
    assert str(err.value).startswith(
        f"constraint cost<=2 unsatisfiable: 0 of 50 samples met it, smallest cost seen {smallest}"
    )


def test_rejection_errors_for_mutation_filter_and_duplicates():
    class BadMutation(GridOps):
        def mutate(self, genome, prob, rng):
            return tuple(self.levels - 1 for _ in genome)  # always the costliest genome

    ops = BadMutation(5, 8)
    algo = GeneticAlgorithm(
        ops,
        objectives=[Objective("g")],
        constraints=[Constraint("cost", "<=", 20)],
        pre_filter=lambda g: {"cost": float(sum(g))},
        settings=GASettings(
            population_size=10,
            parent_size=2,
            mutation_size=8,
            crossover_size=0,
            iterations=3,
            max_tries=30,
        ),
    )
    with pytest.raises(
        ValueError, match=r"0 of 30 mutation proposals met it, smallest cost seen 35"
    ):
        run_search(algo, CountingEvaluator(), seed=0)
    algo = make_algo("random", pre_filter=lambda g: False)
    with pytest.raises(ValueError, match="pre_filter rejected all 1000 samples"):
        run_search(algo, CountingEvaluator(), seed=0)
    tiny = DiscreteFront(n_genes=2, levels=2, n_objectives=2)  # 4 genomes only
    algo = NSGA2(
        tiny.ops,
        objectives=tiny.objectives,
        settings=NSGA2Settings(population_size=5, iterations=2, max_tries=40),
    )
    with pytest.raises(ValueError, match="no new candidate in 40 samples"):
        run_search(algo, CountingEvaluator(tiny), seed=0)


# ---- reproducibility, cache, resumption -------------------------------------------------


@pytest.mark.parametrize("name", ALGOS)
def test_same_seed_same_result_different_seed_different(name):
    runs = [run_search(make_algo(name), CountingEvaluator(), seed=s) for s in (5, 5, 6)]
    texts = [dumped(make_algo(name), r) for r in runs]
    assert texts[0] == texts[1]
    assert [e.key for e in runs[0].entries] != [e.key for e in runs[2].entries]


def test_result_does_not_depend_on_hash_seed():
    code = (
        "import hashlib, json, tests.test_evolution as t\n"
        "from evolution import run_search\n"
        "a = t.make_algo('nsga2'); r = run_search(a, t.CountingEvaluator(), seed=11)\n"
        "print(hashlib.sha256(json.dumps(a.dump(r.state), sort_keys=True).encode()).hexdigest())"
    )
    outs = set()
    for hash_seed in ("1", "2"):
        # tests/ on the path: the module imports its helpers as pytest lets it
        path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outs.add(out.stdout.strip())
    algo = make_algo("nsga2")
    local = run_search(algo, CountingEvaluator(), seed=11)
    import hashlib

    outs.add(hashlib.sha256(dumped(algo, local).encode()).hexdigest())
    assert len(outs) == 1


@pytest.mark.parametrize("name", ALGOS)
def test_cache_prevents_reevaluation(name):
    evaluator = CountingEvaluator()
    result = run_search(make_algo(name), evaluator, seed=2)
    keys = [PROBLEM.ops.key(g) for g in evaluator.genomes]
    assert len(keys) == len(set(keys)) == result.evaluations == len(result.entries)
    assert len(evaluator.batches) <= 8
    assert sum(not r.cached for r in result.records) == result.evaluations
    # a resumed-from-the-end search asks nothing more; a longer one reuses every score
    longer = make_algo(name, iterations=10)
    again = CountingEvaluator()
    run_search(longer, again, resume=json.loads(dumped(longer, result)))
    assert not set(map(PROBLEM.ops.key, again.genomes)) & set(keys)


@pytest.mark.parametrize("name", ALGOS)
def test_resume_from_any_checkpoint_gives_the_identical_result(name):
    checkpoints: list[str] = []
    reports = []
    result = run_search(
        make_algo(name),
        CountingEvaluator(),
        seed=4,
        checkpoint=lambda data: checkpoints.append(json.dumps(data)),
        on_generation=lambda report, state: reports.append(report),
    )
    final = dumped(make_algo(name), result)
    assert len(checkpoints) == len(reports) == 8
    assert [r.generation for r in reports] == list(range(8))
    for k in (0, 3, 6):
        evaluator = CountingEvaluator()
        algo = make_algo(name)  # a new process would start from scratch like this
        resumed = run_search(algo, evaluator, resume=json.loads(checkpoints[k]))
        assert dumped(algo, resumed) == final
        evaluated_by_k = json.loads(checkpoints[k])["state"]["history"][-1]["evaluations"]
        assert len(evaluator.genomes) == result.evaluations - evaluated_by_k


@pytest.mark.parametrize("name", ALGOS)
def test_extending_iterations_on_resume_equals_a_longer_run(name):
    short = run_search(make_algo(name, iterations=4), CountingEvaluator(), seed=9)
    algo = make_algo(name, iterations=8)
    extended = run_search(algo, CountingEvaluator(), resume=json.loads(dumped(algo, short)))
    longer = run_search(make_algo(name, iterations=8), CountingEvaluator(), seed=9)
    assert dumped(algo, extended) == dumped(algo, longer)


def test_restore_rejects_a_checkpoint_of_another_setup():
    algo = make_algo("nsga2", iterations=2)
    data = algo.dump(run_search(algo, CountingEvaluator(), seed=0).state)
    other = NSGA2(
        PROBLEM.ops,
        objectives=PROBLEM.objectives,
        settings=NSGA2Settings(population_size=12, iterations=2),
    )
    with pytest.raises(ValueError, match="settings.population_size=16"):
        other.restore(data)
    with pytest.raises(ValueError, match="algorithm='nsga2'"):
        make_algo("random").restore(data)
    bad = json.loads(json.dumps(data))
    bad["state"]["archive"][0]["key"] = "0" * 16
    with pytest.raises(ValueError, match=r"archive\[0\] key"):
        algo.restore(bad)


def test_failed_evaluation_leaves_the_state_untouched():
    class Flaky(CountingEvaluator):
        def __call__(self, genomes):
            if len(self.batches) == 3 and not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("worker lost")
            return super().__call__(genomes)

    algo = make_algo("nsga2")
    state = algo.init(random.Random(1))
    evaluator = Flaky()
    while not algo.done(state):
        with contextlib.suppress(RuntimeError):  # retry the same generation
            step(algo, state, evaluator)
    assert evaluator.failed
    expected = run_search(make_algo("nsga2"), CountingEvaluator(), seed=1)
    assert json.dumps(algo.dump(state), sort_keys=True) == dumped(algo, expected)


def test_bad_evaluator_output_is_reported():
    with pytest.raises(ValueError, match="returned 0 metric dicts for 16 genomes"):
        run_search(make_algo("random"), lambda gs: [], seed=0)
    with pytest.raises(ValueError, match=r"metrics lack \['f1'\]"):
        run_search(make_algo("random"), lambda gs: [{"f0": 1.0} for _ in gs], seed=0)
    with pytest.raises(ValueError, match="metric 'f1' .* expected a number"):
        run_search(make_algo("random"), lambda gs: [{"f0": 1.0, "f1": "x"} for _ in gs], seed=0)


# ---- reports and outputs ---------------------------------------------------------------


def test_reports_and_rows_agree_with_the_archive():
    seen = []

    def on_generation(report, state):
        points = [(e.metrics["f0"], e.metrics["f1"]) for e in state.archive.values()]
        front = {
            p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)
        }
        assert report.front_size == len(
            {k for k, e in state.archive.items() if (e.metrics["f0"], e.metrics["f1"]) in front}
        )
        assert report.hypervolume == pytest.approx(hypervolume(sorted(front), (40.0, 40.0)))
        assert report.evaluations == len(state.archive)
        seen.append(report.hypervolume)

    result = run_search(
        make_algo("nsga2"), CountingEvaluator(), seed=0, on_generation=on_generation
    )
    assert seen == sorted(seen)  # the front of everything evaluated only grows
    rows = result.rows()
    assert [r["key"] for r in rows] == [e.key for e in result.entries]
    assert {r["key"] for r in rows if r["on_front"]} == {e.key for e in result.front}
    for r in rows[:5]:
        genome = PROBLEM.ops.from_json(json.loads(r["genome"]))
        assert PROBLEM.ops.key(genome) == r["key"]
        assert r["f0"] == PROBLEM.metrics(genome)["f0"]


def test_auto_reference_is_set_once_from_generation_zero():
    algo = GeneticAlgorithm(
        PROBLEM.ops,
        objectives=(Objective("g"), Objective("cost", "max")),
        settings=GASettings(
            population_size=10, parent_size=2, mutation_size=4, crossover_size=4, iterations=4
        ),
    )
    result = run_search(algo, CountingEvaluator(), seed=0)
    gen0 = [e.metrics for e in result.entries if e.generation == 0]
    g = [m["g"] for m in gen0]
    neg_cost = [-m["cost"] for m in gen0]
    expected = tuple(max(v) + 0.1 * (max(v) - min(v)) for v in (g, neg_cost))
    assert result.state.reference == pytest.approx(expected)
    assert algo.reference_point(result.state) == pytest.approx(
        {"g": expected[0], "cost": -expected[1]}
    )
    assert all(h.hypervolume is not None for h in result.history)


def test_importing_evolution_does_not_import_torch():
    code = (
        "import sys, evolution\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["hat-ga", "nsga2"])
def test_failed_evaluations_nan_are_never_selected_as_good(name):
    # a genome whose first gene is 0 "diverges": NaN objectives count as +inf (worst)
    def evaluate(genomes):
        out = []
        for g in genomes:
            m = PROBLEM.metrics(g)
            if g[0] == 0:
                m = {**m, "f0": float("nan"), "f1": float("nan"), "g": float("nan")}
            out.append(m)
        return out

    algo = make_algo(name)
    result = run_search(algo, evaluate, seed=0)
    assert any(e.genome[0] == 0 for e in result.entries)
    assert all(e.genome[0] != 0 for e in result.front)
    assert result.best.genome[0] != 0
    data = json.loads(json.dumps(algo.dump(result.state)))  # NaN survives the round trip
    assert dumped(algo, run_search(make_algo(name), evaluate, resume=data)) == dumped(algo, result)
