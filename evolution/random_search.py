"""Random search: the baseline every search result is compared against.

Each generation asks for ``batch_size`` uniform samples of the space (constraints by the
same rejection as the GA). With ``dedup=True`` (default) a sample already evaluated is
redrawn, so ``iterations x batch_size`` distinct genomes are evaluated: the equal-budget
comparison with NSGA-II and the GA counts evaluations, not proposals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from search_spaces.checks import check_ints

from .base import SearchAlgorithm
from .state import Candidate, SearchState

__all__ = ["RandomSettings", "RandomSearch"]


@dataclass(frozen=True)
class RandomSettings:
    batch_size: int = 50
    iterations: int = 20
    max_tries: int = 1000
    dedup: bool = True

    def __post_init__(self) -> None:
        check_ints("RandomSettings", self, {"batch_size": 1, "iterations": 1, "max_tries": 1})


class RandomSearch(SearchAlgorithm):
    name = "random"
    settings_type = RandomSettings
    settings: RandomSettings

    def ask(self, state: SearchState) -> list[Candidate]:
        taken = set(state.archive) if self.settings.dedup else None
        return self._sample_batch(state, self.settings.batch_size, taken)

    def _select(self, state: SearchState, batch: Sequence[Candidate]) -> None:
        state.population = self.front_keys(state)
