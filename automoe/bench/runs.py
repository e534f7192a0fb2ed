"""Equal-budget runs of the project's engines and of pymoo.

Each run goes on until it has made ``Budget.evaluations`` *distinct* evaluations (or
``Budget.max_generations`` generations, for a search that stops finding new points) and
returns the objective vectors of its first ``evaluations`` distinct evaluations, in the
order they were made, in minimisation space ([N, M]). Counting distinct evaluations on
both sides makes the budgets equal: the engines' cache makes a re-asked genome free, and
a point pymoo proposes again is not counted again either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolution import (
    NSGA2,
    GASettings,
    GeneticAlgorithm,
    NSGA2Settings,
    Objective,
    PreFilter,
    RandomSearch,
    RandomSettings,
    SearchAlgorithm,
    step,
)
from evolution.objectives import minimization_vector
from evolution.runner import Evaluator

__all__ = ["ENGINES", "Budget", "build_engine", "run_engine", "run_pymoo"]

ENGINES = ("nsga2", "hat-ga", "random")


@dataclass(frozen=True)
class Budget:
    """How long one run goes on.

    Attributes:
        evaluations: distinct evaluations each run makes (the comparison's budget).
        population: population of NSGA-II (both implementations) and of HAT's GA, batch
            of random search.
        max_generations: a run that has not reached ``evaluations`` after this many
            generations stops with fewer (reported, never padded).
    """

    evaluations: int
    population: int
    max_generations: int

    def __post_init__(self) -> None:
        for name, low in (("evaluations", 1), ("population", 5), ("max_generations", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Budget.{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def for_evaluations(cls, evaluations: int, population: int) -> Budget:
        """Room for 20x the generations an algorithm that never repeats itself needs."""
        return cls(evaluations, population, 20 * math.ceil(evaluations / population) + 20)


def build_engine(name: str, ops: Any, objectives: Sequence[Objective], *, budget: Budget,
                 pre_filter: PreFilter | None = None,
                 reference: Mapping[str, float] | None = None,
                 mutation_prob: float | None = None) -> SearchAlgorithm:
    """One of `ENGINES` at its default settings but for the population: NSGA-II with
    ``population`` parents and children; HAT's GA with HAT's proportions (20% parents, 40%
    mutants, 40% crossovers); random search in batches of ``population``.
    ``mutation_prob`` replaces NSGA-II's and the GA's per-gene mutation probability (None:
    their default, HAT's 0.3)."""
    p, iterations = budget.population, budget.max_generations
    mutation: dict[str, Any] = {} if mutation_prob is None else {"mutation_prob": mutation_prob}
    algo: SearchAlgorithm
    if name == "nsga2":
        algo = NSGA2(ops, objectives=objectives, pre_filter=pre_filter, reference=reference,
                     settings=NSGA2Settings(population_size=p, iterations=iterations,
                                            **mutation))
    elif name == "hat-ga":
        parents = max(2, round(0.2 * p))
        mutants = (p - parents) // 2
        settings = GASettings(population_size=p, parent_size=parents, mutation_size=mutants,
                              crossover_size=p - parents - mutants, iterations=iterations,
                              **mutation)
        algo = GeneticAlgorithm(ops, objectives=objectives, pre_filter=pre_filter,
                                reference=reference, settings=settings)
    elif name == "random":
        algo = RandomSearch(ops, objectives=objectives, pre_filter=pre_filter,
                            reference=reference,
                            settings=RandomSettings(batch_size=p, iterations=iterations))
    else:
        raise ValueError(f"unknown engine {name!r}; expected one of {list(ENGINES)}")
    return algo


def run_engine(algo: SearchAlgorithm, evaluate: Evaluator, *, budget: Budget,
               seed: int) -> np.ndarray:
    """[N, M] minimisation vectors of the first N = ``budget.evaluations`` distinct
    genomes ``algo`` evaluated with ``random.Random(seed)`` (fewer if it stalled)."""
    state = algo.init(random.Random(seed))
    while state.evaluations < budget.evaluations and not algo.done(state):
        step(algo, state, evaluate)
    entries = list(state.archive.values())[: budget.evaluations]
    return np.array([minimization_vector(e.metrics, algo.objectives) for e in entries],
                    dtype=float).reshape(len(entries), len(algo.objectives))


def run_pymoo(problem: Any, algorithm: Any, *, budget: Budget, seed: int,
              key: Callable[[Any], Hashable | None]) -> np.ndarray:
    """[N, M] objective vectors (pymoo minimises) of the first N = ``budget.evaluations``
    distinct points a pymoo ``algorithm`` evaluated on ``problem``, driven by pymoo's
    ask-and-tell interface. ``key(x)`` identifies a decision vector (None: not a valid
    point, e.g. one pymoo's constraint handling will discard; not counted)."""
    algorithm.setup(problem, termination=("n_gen", budget.max_generations), seed=seed,
                    verbose=False)
    seen: set[Hashable] = set()
    points: list[np.ndarray] = []
    while len(points) < budget.evaluations and algorithm.has_next():
        pop = algorithm.ask()
        if len(pop) == 0:
            break
        algorithm.evaluator.eval(problem, pop)
        algorithm.tell(infills=pop)
        for x, f in zip(pop.get("X"), pop.get("F"), strict=True):
            k = key(x)
            if k is None or k in seen:
                continue
            seen.add(k)
            points.append(np.asarray(f, dtype=float))
    m = problem.n_obj
    return np.array(points[: budget.evaluations], dtype=float).reshape(-1, m)
