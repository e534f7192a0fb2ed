"""HAT/AutoMoE's genetic algorithm (``fairseq/evolution.py::run_evo_search``), faithfully.

Generation 0 scores ``population_size`` samples. Every later generation takes the best
``parent_size`` candidates of the previous population (ascending by the first objective,
feasible before infeasible) as parents and asks for
``parents + mutation_size mutants + crossover_size crossovers``:

- a mutant is ``ops.mutate(random parent, mutation_prob)``;
- a crossover is ``ops.crossover(a, b)`` of two distinct random parents;
- a child whose cheap metrics (``pre_filter``) violate a constraint is discarded and
  redrawn (new parent(s) each try), at most ``max_tries`` times.

HAT re-scores the parents every iteration; here they are asked again with origin
"parent" and the cache makes that free. HAT does not de-duplicate (``dedup=False``, the
default); ``dedup=True`` redraws children already in the population. ``iterations`` is
HAT's ``evo-iter``: the number of populations scored, the initial one included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from search_spaces.checks import check_ints

from .base import SearchAlgorithm
from .state import Candidate, SearchState

__all__ = ["GASettings", "GeneticAlgorithm"]


@dataclass(frozen=True)
class GASettings:
    """HAT's ``evo_search`` YAML; the defaults are HAT's (AutoMoE uses iterations=10)."""

    population_size: int = 125
    parent_size: int = 25
    mutation_size: int = 50
    crossover_size: int = 50
    mutation_prob: float = 0.3
    iterations: int = 30
    max_tries: int = 1000
    dedup: bool = False

    def __post_init__(self) -> None:
        check_ints("GASettings", self, {"population_size": 1, "parent_size": 1,
                                        "iterations": 1, "max_tries": 1, "mutation_size": 0,
                                        "crossover_size": 0})
        total = self.parent_size + self.mutation_size + self.crossover_size
        if total != self.population_size:  # HAT asserts this too
            raise ValueError(
                f"GASettings: population_size {self.population_size} must equal parent_size + "
                f"mutation_size + crossover_size = {self.parent_size} + {self.mutation_size} "
                f"+ {self.crossover_size} = {total}"
            )
        if self.crossover_size and self.parent_size < 2:
            raise ValueError("GASettings: crossover needs parent_size >= 2")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(
                f"GASettings.mutation_prob must be in [0, 1], got {self.mutation_prob}"
            )


class GeneticAlgorithm(SearchAlgorithm):
    """Single-objective GA on ``objectives[0]``; other objectives are only reported."""

    name = "hat-ga"
    settings_type = GASettings
    settings: GASettings

    def parents(self, state: SearchState) -> list[str]:
        """The best ``parent_size`` keys of the current population, best first: feasible
        before infeasible (less violation first), then by the first objective; ties keep
        population order (HAT's argsort does not promise any)."""
        pop = state.population
        order = sorted(
            range(len(pop)),
            key=lambda i: (self.violation(state, pop[i]), self.vector(state, pop[i])[0], i),
        )
        return [pop[i] for i in order[: self.settings.parent_size]]

    def ask(self, state: SearchState) -> list[Candidate]:
        s, rng = self.settings, state.rng
        if state.generation == 0:
            return self._sample_batch(state, s.population_size, set() if s.dedup else None)
        parent_keys = self.parents(state)
        parents = [state.archive[k].genome for k in parent_keys]
        batch = [Candidate(g, k, "parent") for g, k in zip(parents, parent_keys, strict=True)]
        taken = set(parent_keys) if s.dedup else None

        def mutant():
            return self.ops.mutate(rng.choice(parents), s.mutation_prob, rng)

        def cross():
            i, j = rng.sample(range(len(parents)), 2)
            return self.ops.crossover(parents[i], parents[j], rng)

        batch += [self._propose(mutant, "mutation", taken) for _ in range(s.mutation_size)]
        batch += [self._propose(cross, "crossover", taken) for _ in range(s.crossover_size)]
        return batch

    def _select(self, state: SearchState, batch: Sequence[Candidate]) -> None:
        state.population = [c.key for c in batch]
