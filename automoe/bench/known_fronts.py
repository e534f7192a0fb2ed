"""The engine against pymoo's NSGA-II on ZDT1-3 and DTLZ2 (2 and 3 objectives).

The engines search genomes of discrete genes, so a continuous problem is searched on a
grid: variable i of a genome is an integer ``g_i`` in ``0..levels-1`` standing for
``x_i = g_i / (levels - 1)`` (every variable of these problems lies in [0, 1]), with the
operators the engines use on search spaces (HAT's: each gene resampled uniformly with the
mutation probability, uniform crossover), through an `evolution.GridOps`; two variants
of NSGA-II mutate each gene with probability 1/n_var, by that redraw or by a local step
(`MUTATION_VARIANTS`, run only when named). pymoo runs twice:
``pymoo-grid`` on the same grid (integer variables, its documented integer operators:
SBX and polynomial mutation with rounding), the like-for-like comparison; and
``pymoo-real`` on the continuous problem (real-coded SBX and polynomial mutation), pymoo
as it is used. All at pymoo's and the engines' default operator settings; only the
population and the budget are set, the same for all.

Hypervolumes use a fixed reference per problem: 1.1 times each objective's largest value
over the whole decision space (ZDT: f1 <= 1, f2 <= 10; DTLZ2: f_i <= 1 + k/4 for its k
distance variables), so every evaluated point counts, however far from the front.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automoe.bench import require
from automoe.bench.report import HOLM_FAMILIES, exact_hypervolume, reuse_runs, summarise
from automoe.bench.runs import ENGINES, Budget, build_engine, run_engine, run_pymoo
from evolution import GridOps, Objective

__all__ = ["KnownFront", "PROBLEMS", "get_problem", "ALGORITHMS", "DEFAULT_ALGORITHMS",
           "MUTATION_VARIANTS", "KnownFrontSettings", "run_known_fronts"]

PYMOO_ALGORITHMS = ("pymoo-grid", "pymoo-real")
# The engine's NSGA-II with per-gene mutation probability 1/n_var, by HAT's uniform redraw
# or by a local step on the ordered levels (`evolution.GridOps`' mutations): the
# diagnostic of the gap to pymoo (docs/benchmarks.md, "Diagnostic: the mutation operator").
MUTATION_VARIANTS = {"nsga2-rate": "redraw", "nsga2-local": "local"}
DEFAULT_ALGORITHMS = (*ENGINES, *PYMOO_ALGORITHMS)
ALGORITHMS = (*ENGINES, *MUTATION_VARIANTS, *PYMOO_ALGORITHMS)


@dataclass(frozen=True)
class KnownFront:
    """A test problem with a known Pareto front, as pymoo defines it.

    Attributes:
        name: "zdt1", ..., "dtlz2-3".
        pymoo_name, n_obj: ``pymoo.problems.get_problem(pymoo_name, n_obj=...)``.
        f_max: the largest value of each objective over the decision space.
    """

    name: str
    pymoo_name: str
    n_obj: int
    f_max: tuple[float, ...]

    @property
    def reference(self) -> tuple[float, ...]:
        return tuple(1.1 * f for f in self.f_max)

    def pymoo_problem(self) -> Any:
        problems: Any = require("pymoo.problems")
        if self.pymoo_name.startswith("dtlz"):
            return problems.get_problem(self.pymoo_name, n_obj=self.n_obj)
        return problems.get_problem(self.pymoo_name)

    def true_hypervolume(self) -> float:
        """Hypervolume of the true front under `reference`: closed forms (the area under
        ZDT1's 1 - sqrt(f1) is 1/3, under ZDT2's 1 - f1^2 2/3; DTLZ2's front is the unit
        sphere's positive orthant), ZDT3's from 10^5 points per front segment (pymoo's
        segments; error below 1e-5)."""
        r = self.reference
        volume = math.prod(r)
        if self.name == "zdt1":
            return volume - 1 / 3
        if self.name == "zdt2":
            return volume - 2 / 3
        if self.name == "dtlz2-2":
            return volume - math.pi / 4
        if self.name == "dtlz2-3":
            return volume - math.pi / 6
        front = self.pymoo_problem().pareto_front(5 * 100_000)  # ZDT3: n_points
        moocore: Any = require("moocore")  # 500k points: too many for the Python cross-check
        return float(moocore.hypervolume(front, ref=np.asarray(r)))


# DTLZ2 with pymoo's 10 variables has k = 10 - M + 1 distance variables, each adding at
# most 1/4 to g, and f_i <= 1 + g.
PROBLEMS: dict[str, KnownFront] = {
    p.name: p for p in (
        KnownFront("zdt1", "zdt1", 2, (1.0, 10.0)),
        KnownFront("zdt2", "zdt2", 2, (1.0, 10.0)),
        KnownFront("zdt3", "zdt3", 2, (1.0, 10.0)),
        KnownFront("dtlz2-2", "dtlz2", 2, (1 + 9 / 4,) * 2),
        KnownFront("dtlz2-3", "dtlz2", 3, (1 + 8 / 4,) * 3),
    )
}


def get_problem(name: str) -> KnownFront:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; expected one of {list(PROBLEMS)}") from None


def _objectives(n_obj: int) -> tuple[Objective, ...]:
    return tuple(Objective(f"f{i + 1}", "min") for i in range(n_obj))


def _engine_evaluator(problem: Any, ops: GridOps, n_obj: int
                      ) -> Callable[[list[Any]], list[dict[str, float]]]:
    names = [o.name for o in _objectives(n_obj)]

    def evaluate(genomes: list[Any]) -> list[dict[str, float]]:
        values = problem.evaluate(ops.decode(genomes))
        return [dict(zip(names, map(float, row), strict=True)) for row in values]

    return evaluate


def _pymoo_grid_problem(problem: Any, ops: GridOps) -> Any:
    core: Any = require("pymoo.core.problem")

    class GridProblem(core.Problem):  # type: ignore[misc]  # pymoo's base is untyped
        def __init__(self) -> None:
            super().__init__(n_var=ops.n_var, n_obj=problem.n_obj, xl=0,
                             xu=ops.levels - 1, vtype=int)

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any,
                      **kwargs: Any) -> None:
            out["F"] = problem.evaluate(ops.decode(np.rint(x)))

    return GridProblem()


def _pymoo_nsga2(kind: str, population: int) -> Any:
    nsga2: Any = require("pymoo.algorithms.moo.nsga2")
    if kind == "pymoo-real":
        return nsga2.NSGA2(pop_size=population)
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    return nsga2.NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                       crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                       mutation=PM(eta=20, vtype=float, repair=RoundingRepair()))


def run_one(name: str, algorithm: str, seed: int, *, budget: Budget, levels: int
            ) -> np.ndarray:
    """[N, M] objective vectors of one run (`runs`)."""
    spec = get_problem(name)
    problem = spec.pymoo_problem()
    ops = GridOps(problem.n_var, levels, mutation=MUTATION_VARIANTS.get(algorithm, "redraw"))
    if algorithm in ENGINES or algorithm in MUTATION_VARIANTS:
        objectives = _objectives(spec.n_obj)
        reference = {o.name: r for o, r in zip(objectives, spec.reference, strict=True)}
        variant = algorithm in MUTATION_VARIANTS
        algo = build_engine("nsga2" if variant else algorithm, ops, objectives, budget=budget,
                            reference=reference,
                            mutation_prob=1 / problem.n_var if variant else None)
        return run_engine(algo, _engine_evaluator(problem, ops, spec.n_obj), budget=budget,
                          seed=seed)
    if algorithm == "pymoo-grid":
        return run_pymoo(_pymoo_grid_problem(problem, ops), _pymoo_nsga2(algorithm,
                         budget.population), budget=budget, seed=seed,
                         key=lambda x: tuple(np.rint(x).astype(int).tolist()))
    if algorithm == "pymoo-real":
        return run_pymoo(problem, _pymoo_nsga2(algorithm, budget.population), budget=budget,
                         seed=seed, key=lambda x: np.asarray(x, dtype=float).tobytes())
    raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")


@dataclass(frozen=True)
class KnownFrontSettings:
    """One benchmark: every problem x algorithm x seed, ``evaluations`` distinct
    evaluations each, population ``population``, grid of ``levels`` values per variable.

    Each algorithm is compared with each of ``baselines``. A baseline not among
    ``algorithms`` is left out, unless ``reuse`` names an earlier record of this benchmark
    (its JSON) with the same evaluations, population and grid: its runs of that baseline
    are taken from there, once the first of them, re-run here, gives the recorded
    hypervolume exactly. ``holm_over``: the Holm family of each summary, all of its
    comparisons ("table") or each algorithm's, one per problem ("algorithm").
    """

    problems: tuple[str, ...] = tuple(PROBLEMS)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    seeds: tuple[int, ...] = tuple(range(10))
    evaluations: int = 2500
    population: int = 50
    levels: int = 1001
    baselines: tuple[str, ...] = field(default=PYMOO_ALGORITHMS)
    reuse: str | None = None
    holm_over: str = "table"

    def __post_init__(self) -> None:
        for name in self.problems:
            get_problem(name)
        unknown = [a for a in (*self.algorithms, *self.baselines) if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; expected some of "
                             f"{list(ALGORITHMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if self.holm_over not in HOLM_FAMILIES:
            raise ValueError(f"holm_over must be one of {list(HOLM_FAMILIES)}, got "
                             f"{self.holm_over!r}")
        Budget.for_evaluations(self.evaluations, self.population)  # validates both

    @property
    def budget(self) -> Budget:
        return Budget.for_evaluations(self.evaluations, self.population)

    @property
    def reused(self) -> tuple[str, ...]:
        """The baselines whose runs come from ``reuse``."""
        if self.reuse is None:
            return ()
        return tuple(b for b in self.baselines if b not in self.algorithms)


def run_known_fronts(settings: KnownFrontSettings,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns its JSON-ready record: settings, each problem's
    reference point and true-front hypervolume, one row per run (hypervolume, its share
    of the true front's, evaluations reached, seconds; the reused runs as recorded), the
    reused record's check and the summaries against each baseline (`report.summarise`)."""
    specs = {name: get_problem(name) for name in settings.problems}
    true_hv = {name: spec.true_hypervolume() for name, spec in specs.items()}
    problems = {name: {"reference": list(spec.reference), "true_hypervolume": true_hv[name],
                       "n_var": int(spec.pymoo_problem().n_var), "n_obj": spec.n_obj}
                for name, spec in specs.items()}

    def run(name: str, algorithm: str, seed: int) -> dict[str, Any]:
        began = time.perf_counter()
        points = run_one(name, algorithm, seed, budget=settings.budget, levels=settings.levels)
        hv = exact_hypervolume(points, specs[name].reference)
        row = {"problem": name, "algorithm": algorithm, "seed": seed,
               "evaluations": len(points), "hypervolume": hv, "share": hv / true_hv[name],
               "seconds": round(time.perf_counter() - began, 2)}
        if progress is not None:
            progress(f"{name} {algorithm} seed {seed}: hypervolume {hv:.5f} after "
                     f"{len(points)} evaluations ({row['seconds']} s)")
        return row

    reused, reuse = reuse_runs(
        settings.reuse, algorithms=settings.reused, group="problem",
        groups=settings.problems, seeds=settings.seeds,
        settings=dataclasses.asdict(settings), match=("evaluations", "population", "levels"),
        scores=("evaluations", "hypervolume"), rerun=run)
    rows = [run(name, algorithm, seed) for name in settings.problems
            for algorithm in settings.algorithms for seed in settings.seeds] + reused
    present = {row["algorithm"] for row in rows}
    summaries = [{"value": "hypervolume", "group": "problem", "baseline": b,
                  "holm_over": settings.holm_over,
                  "rows": summarise(rows, value="hypervolume", group="problem", baseline=b,
                                    holm_over=settings.holm_over)}
                 for b in settings.baselines if b in present]
    return {"settings": {**dataclasses.asdict(settings),
                         "max_generations": settings.budget.max_generations},
            "problems": problems, "reuse": reuse, "runs": rows, "summaries": summaries}
