"""The engine on a tabulated NAS benchmark: NAS-Bench-Graph (Qin et al., NeurIPS 2022
Datasets and Benchmarks; PyPI ``nas-bench-graph``, Apache-2.0), read as the package ships
it (``nas_bench_graph.light_read``: per architecture its validation and test accuracy,
latency and parameters, on 9 datasets).

Search space: NAS-Bench-Graph's own. A genome is ``(link, op1, op2, op3, op4)``: one of
its 9 DAG patterns of 4 computing nodes and one of 9 operations per node (gat, gcn, gin,
cheb, sage, arma, graph, fc, skip); 9^5 = 59,049 genomes, of which 59,040 are valid (not
all four skip). The package's canonical hash (``Arch.valid_hash``) maps them onto the
26,206 tabulated architectures, and it is the genome's key: isomorphic genomes are one
candidate, so asking for an architecture twice is one evaluation, in every algorithm.
Objectives: validation accuracy (max) and latency (min), as tabulated; the whole front is
known from the table. The engines use their operators on the genes (HAT's); pymoo's
NSGA-II treats each gene as a categorical ``Choice`` variable (pymoo's mixed-variable
sampling, uniform crossover and random-choice mutation, with NSGA-II's own tournament and
survival), and marks an all-skip genome infeasible (not counted as an evaluation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from automoe.bench import require
from automoe.bench.report import HOLM_FAMILIES, exact_hypervolume, reuse_runs, summarise
from automoe.bench.runs import ENGINES, Budget, build_engine, run_engine, run_pymoo
from evolution import GridOps, Objective
from evolution.pareto import non_dominated_mask

__all__ = ["DATASETS", "GraphArchOps", "ArchTable", "load_table", "NasBenchSettings",
           "run_nasbench_graph", "ALGORITHMS", "DEFAULT_ALGORITHMS"]

# proteins uses another operation list (5 operations) and is left out
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv")
DEFAULT_ALGORITHMS = (*ENGINES, "pymoo")
# The engine's NSGA-II with per-gene mutation probability 1/5 (one gene in five) instead of
# 0.3 (docs/benchmarks.md, "Diagnostic: the mutation operator"). A local step on ordered
# levels does not apply: these genes are unordered categories.
ALGORITHMS = (*ENGINES, "nsga2-rate", "pymoo")
GENES = ("link", "op1", "op2", "op3", "op4")
CHOICES = 9  # link patterns, and operations per node
SKIP = 8  # index of "skip" in the package's operation list
OBJECTIVES = (Objective("accuracy", "max"), Objective("latency", "min"))


@lru_cache(maxsize=1)
def _canonical() -> dict[tuple[int, ...], int]:
    """Every valid genome -> the package's architecture hash (59,040 entries, ~2 s)."""
    arch: Any = require("nas_bench_graph.architecture")
    if len(arch.link_list) != CHOICES or arch.gnn_list[SKIP] != "skip":
        raise ValueError("nas-bench-graph: unexpected search space (expected 9 link patterns "
                         "and 'skip' as the 9th operation); only version 1.x is supported")
    out = {}
    for genome in itertools.product(range(CHOICES), repeat=len(GENES)):
        if all(g == SKIP for g in genome[1:]):
            continue
        ops = [arch.gnn_list[g] for g in genome[1:]]
        out[genome] = int(arch.Arch(list(arch.link_list[genome[0]]), ops).valid_hash())
    return out


@dataclass(frozen=True)
class GraphArchOps(GridOps):
    """NAS-Bench-Graph genomes ``(link, op1..op4)``, each gene in 0..8: a `GridOps` (HAT's
    operators by default) whose key is the architecture's canonical hash, so two genomes of
    one architecture are one candidate."""

    n_var: int = len(GENES)
    levels: int = CHOICES

    @staticmethod
    def valid(genome: tuple[int, ...]) -> bool:
        return not all(g == SKIP for g in genome[1:])

    @staticmethod
    def arch_hash(genome: tuple[int, ...]) -> int | None:
        """The package's hash of the genome's architecture; None for the all-skip one."""
        return _canonical().get(tuple(int(g) for g in genome))

    def key(self, genome: tuple[int, ...]) -> str:
        h = self.arch_hash(genome)
        return "all-skip" if h is None else f"arch-{h}"


@dataclass(frozen=True)
class ArchTable:
    """One dataset's table: hash -> validation accuracy and latency."""

    dataset: str
    accuracy: dict[int, float]
    latency: dict[int, float]

    def metrics(self, genome: tuple[int, ...]) -> dict[str, float]:
        h = GraphArchOps.arch_hash(genome)
        if h is None:
            raise ValueError(f"genome {genome} is all skip: not an architecture")
        return {"accuracy": self.accuracy[h], "latency": self.latency[h]}

    def points(self) -> np.ndarray:
        """[26206, 2] every architecture in minimisation space (-accuracy, latency)."""
        keys = sorted(self.accuracy)
        return np.array([[-self.accuracy[k], self.latency[k]] for k in keys])

    def true_front(self) -> np.ndarray:
        pts = self.points()
        return pts[non_dominated_mask(pts)]


def load_table(dataset: str) -> ArchTable:
    """The dataset's table as the package ships it; ValueError for an unknown dataset."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown NAS-Bench-Graph dataset {dataset!r}; expected one of "
                         f"{list(DATASETS)} (proteins uses another operation list)")
    bench: Any = require("nas_bench_graph")
    table = bench.light_read(dataset)
    return ArchTable(dataset, {int(k): float(v["valid_perf"]) for k, v in table.items()},
                     {int(k): float(v["latency"]) for k, v in table.items()})


def _pymoo_problem(table: ArchTable) -> Any:
    core: Any = require("pymoo.core.problem")
    from pymoo.core.variable import Choice

    worst = [0.0, max(table.latency.values())]

    class GraphProblem(core.ElementwiseProblem):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            super().__init__(vars={g: Choice(options=list(range(CHOICES))) for g in GENES},
                             n_obj=2, n_ieq_constr=1)

        def _evaluate(self, x: dict[str, Any], out: dict[str, Any], *args: Any,
                      **kwargs: Any) -> None:
            genome = tuple(int(x[g]) for g in GENES)
            if not GraphArchOps.valid(genome):
                out["F"], out["G"] = worst, [1.0]
                return
            m = table.metrics(genome)
            out["F"], out["G"] = [-m["accuracy"], m["latency"]], [0.0]

    return GraphProblem()


def _pymoo_nsga2(population: int) -> Any:
    nsga2: Any = require("pymoo.algorithms.moo.nsga2")
    from pymoo.core.mixed import (
        MixedVariableDuplicateElimination,
        MixedVariableMating,
        MixedVariableSampling,
    )
    from pymoo.operators.selection.tournament import TournamentSelection

    dedup = MixedVariableDuplicateElimination()
    mating = MixedVariableMating(selection=TournamentSelection(func_comp=nsga2.binary_tournament),
                                 eliminate_duplicates=dedup)
    return nsga2.NSGA2(pop_size=population, sampling=MixedVariableSampling(), mating=mating,
                       eliminate_duplicates=dedup)


def _pymoo_key(x: Any) -> int | None:
    return GraphArchOps.arch_hash(tuple(int(x[g]) for g in GENES))


def run_one(table: ArchTable, algorithm: str, seed: int, *, budget: Budget) -> np.ndarray:
    """[N, 2] (-accuracy, latency) of one run's first N distinct architectures."""
    if algorithm in ENGINES or algorithm == "nsga2-rate":
        ops = GraphArchOps()
        rate = algorithm == "nsga2-rate"
        algo = build_engine("nsga2" if rate else algorithm, ops, OBJECTIVES, budget=budget,
                            pre_filter=ops.valid, mutation_prob=1 / len(GENES) if rate else None)
        return run_engine(algo, lambda genomes: [table.metrics(g) for g in genomes],
                          budget=budget, seed=seed)
    if algorithm == "pymoo":
        return run_pymoo(_pymoo_problem(table), _pymoo_nsga2(budget.population),
                         budget=budget, seed=seed, key=_pymoo_key)
    raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")


@dataclass(frozen=True)
class NasBenchSettings:
    """Every dataset x algorithm x seed; hypervolumes after each of ``checkpoints``
    distinct evaluations (the run goes on to the largest). ``baselines``, ``reuse`` and
    ``holm_over`` as in `automoe.bench.known_fronts.KnownFrontSettings` (a reused record
    must have the same checkpoints and population)."""

    datasets: tuple[str, ...] = ("cora", "citeseer", "pubmed")
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    seeds: tuple[int, ...] = tuple(range(10))
    checkpoints: tuple[int, ...] = (100, 300, 1000)
    population: int = 20
    baselines: tuple[str, ...] = ("pymoo", "random")
    reuse: str | None = None
    holm_over: str = "table"

    def __post_init__(self) -> None:
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ValueError(f"datasets {list(bad) or '(none)'} not among {list(DATASETS)}")
        unknown = [a for a in (*self.algorithms, *self.baselines) if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; expected some of "
                             f"{list(ALGORITHMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not self.checkpoints or list(self.checkpoints) != sorted(set(self.checkpoints)) \
                or self.checkpoints[0] < 1:
            raise ValueError(f"checkpoints must be increasing positive counts, got "
                             f"{self.checkpoints}")
        if self.holm_over not in HOLM_FAMILIES:
            raise ValueError(f"holm_over must be one of {list(HOLM_FAMILIES)}, got "
                             f"{self.holm_over!r}")
        Budget.for_evaluations(self.checkpoints[-1], self.population)  # validates both

    @property
    def budget(self) -> Budget:
        return Budget.for_evaluations(self.checkpoints[-1], self.population)

    @property
    def reused(self) -> tuple[str, ...]:
        """The baselines whose runs come from ``reuse``."""
        if self.reuse is None:
            return ()
        return tuple(b for b in self.baselines if b not in self.algorithms)


def front_record(table: ArchTable) -> dict[str, Any]:
    """The true front, the fixed reference point (the front's worst value in each
    objective plus 10% of its range, in minimisation space) and its hypervolume."""
    front = table.true_front()
    worst, best = front.max(axis=0), front.min(axis=0)
    reference = worst + 0.1 * (worst - best)
    return {"architectures": len(table.accuracy), "front_size": len(front),
            "reference": reference.tolist(),
            "true_hypervolume": exact_hypervolume(front, reference),
            "front": front.tolist(),
            "sha256": hashlib.sha256(np.ascontiguousarray(table.points()).tobytes()).hexdigest()}


def run_nasbench_graph(settings: NasBenchSettings,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns its JSON-ready record: settings, each dataset's front
    (`front_record`), one row per run (hypervolume and share of the true front's after
    each checkpoint; the reused runs as recorded), the reused record's check and the
    summaries of each checkpoint's share against each baseline."""
    datasets: dict[str, dict[str, Any]] = {}
    tables: dict[str, ArchTable] = {}
    for dataset in settings.datasets:
        tables[dataset] = load_table(dataset)
        datasets[dataset] = front_record(tables[dataset])

    def run(dataset: str, algorithm: str, seed: int) -> dict[str, Any]:
        began = time.perf_counter()
        points = run_one(tables[dataset], algorithm, seed, budget=settings.budget)
        row: dict[str, Any] = {"dataset": dataset, "algorithm": algorithm, "seed": seed,
                               "evaluations": len(points)}
        info = datasets[dataset]
        for c in settings.checkpoints:
            hv = exact_hypervolume(points[:c], info["reference"])
            row[f"hv@{c}"] = hv
            row[f"share@{c}"] = hv / info["true_hypervolume"]
        row["seconds"] = round(time.perf_counter() - began, 2)
        if progress is not None:
            shares = ", ".join(f"{row[f'share@{c}']:.4f}" for c in settings.checkpoints)
            progress(f"{dataset} {algorithm} seed {seed}: share {shares} "
                     f"({len(points)} evaluations, {row['seconds']} s)")
        return row

    reused, reuse = reuse_runs(
        settings.reuse, algorithms=settings.reused, group="dataset",
        groups=settings.datasets, seeds=settings.seeds,
        settings=dataclasses.asdict(settings), match=("checkpoints", "population"),
        scores=("evaluations", *(f"hv@{c}" for c in settings.checkpoints)), rerun=run)
    rows = [run(dataset, algorithm, seed) for dataset in settings.datasets
            for algorithm in settings.algorithms for seed in settings.seeds] + reused
    present = {row["algorithm"] for row in rows}
    summaries = [{"value": f"share@{c}", "group": "dataset", "baseline": b,
                  "holm_over": settings.holm_over,
                  "rows": summarise(rows, value=f"share@{c}", group="dataset", baseline=b,
                                    holm_over=settings.holm_over)}
                 for c in settings.checkpoints for b in settings.baselines if b in present]
    return {"settings": dataclasses.asdict(settings), "max_generations":
            settings.budget.max_generations, "datasets": datasets, "reuse": reuse,
            "runs": rows, "summaries": summaries}
