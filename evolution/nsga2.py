"""NSGA-II (Deb et al. 2002) over the genome ops, with Deb's constraint domination.

Generation 0 scores ``population_size`` samples. Each later generation asks for
``offspring_size`` children: each child's first parent is a binary-tournament winner
(lower rank, then larger crowding distance); with probability ``crossover_prob`` it is
crossed with a second winner; the result is mutated with per-gene probability
``mutation_prob`` (origin "crossover" or "mutation"). Survivors of parents + children are
chosen by `pareto.nsga2_select`: whole fronts under constraint domination (feasible first,
then by total relative violation), the last front cut by crowding distance.

``dedup=True`` (default, as pymoo's ``eliminate_duplicates``) redraws children already in
the population or the offspring, so duplicates neither waste slots nor distort crowding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search_spaces.checks import check_ints

from .base import SearchAlgorithm
from .pareto import crowding_distance, non_dominated_sort, nsga2_select
from .state import Candidate, SearchState

__all__ = ["NSGA2Settings", "NSGA2"]


@dataclass(frozen=True)
class NSGA2Settings:
    population_size: int = 50
    offspring_size: int | None = None  # None: population_size
    crossover_prob: float = 0.9
    mutation_prob: float = 0.3
    iterations: int = 20
    max_tries: int = 1000
    dedup: bool = True

    def __post_init__(self) -> None:
        # population_size >= 2: a tournament compares two candidates
        check_ints("NSGA2Settings", self, {"population_size": 2, "iterations": 1,
                                           "max_tries": 1})
        if self.offspring_size is not None:
            check_ints("NSGA2Settings", self, {"offspring_size": 1})
        for name in ("crossover_prob", "mutation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"NSGA2Settings.{name} must be in [0, 1], got {getattr(self, name)}"
                )

    @property
    def n_offspring(self) -> int:
        return self.population_size if self.offspring_size is None else self.offspring_size


class NSGA2(SearchAlgorithm):
    name = "nsga2"
    settings_type = NSGA2Settings
    settings: NSGA2Settings

    def _points(self, state: SearchState, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        pts = np.array([self.vector(state, k) for k in keys], dtype=float).reshape(len(keys), -1)
        viol = np.array([self.violation(state, k) for k in keys], dtype=float)
        return pts, viol

    def rank_and_crowding(self, state: SearchState) -> tuple[np.ndarray, np.ndarray]:
        """[P] front rank (0 = best) and crowding distance within the front, for the
        current population."""
        pts, viol = self._points(state, state.population)
        rank = np.zeros(len(pts), dtype=int)
        crowd = np.zeros(len(pts))
        for r, front in enumerate(non_dominated_sort(pts, viol)):
            rank[front] = r
            crowd[front] = crowding_distance(pts[front])
        return rank, crowd

    def ask(self, state: SearchState) -> list[Candidate]:
        s, rng = self.settings, state.rng
        if state.generation == 0:
            return self._sample_batch(state, s.population_size, set() if s.dedup else None)
        pop = [state.archive[k].genome for k in state.population]
        rank, crowd = self.rank_and_crowding(state)

        def tournament():
            i, j = rng.sample(range(len(pop)), 2)
            better_j = (rank[j], -crowd[j]) < (rank[i], -crowd[i])
            return pop[j] if better_j else pop[i]

        def crossed_child():
            child = self.ops.crossover(tournament(), tournament(), rng)
            return self.ops.mutate(child, s.mutation_prob, rng)

        def mutant():
            return self.ops.mutate(tournament(), s.mutation_prob, rng)

        taken = set(state.population) if s.dedup else None
        batch = []
        for _ in range(s.n_offspring):
            if rng.random() < s.crossover_prob:
                batch.append(self._propose(crossed_child, "crossover", taken))
            else:
                batch.append(self._propose(mutant, "mutation", taken))
        return batch

    def _select(self, state: SearchState, batch: Sequence[Candidate]) -> None:
        pool = list(state.population) + [c.key for c in batch]
        if self.settings.dedup:
            pool = list(dict.fromkeys(pool))
        pts, viol = self._points(state, pool)
        keep = nsga2_select(pts, min(self.settings.population_size, len(pool)), viol)
        state.population = [pool[i] for i in keep]
