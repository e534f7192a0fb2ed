"""Torch-free search algorithms for AutoMoE.

HAT/AutoMoE's genetic algorithm (`GeneticAlgorithm`), NSGA-II (`NSGA2`) and the random
search baseline (`RandomSearch`), all generic over a `GenomeOps` (a
`search_spaces.SearchSpace` works directly; `GridOps` is one over integer vectors),
driven generation by generation with an injected batch evaluator (`run_search`, `step`),
with an evaluation cache, constraints by rejection and by Deb's constraint domination, and
JSON checkpoints that resume to the identical result. `pareto` holds the non-dominated
sort, crowding distance and exact hypervolume. See docs/search.md.
"""

from .base import PreFilter, SearchAlgorithm, UnsatisfiableConstraintError
from .ga import GASettings, GeneticAlgorithm
from .genome import GeneticOps, GenomeOps, SpaceOps, as_genome_ops
from .grid import GridOps
from .nsga2 import NSGA2, NSGA2Settings
from .objectives import Constraint, Objective
from .pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_mask,
    non_dominated_sort,
    nsga2_select,
)
from .random_search import RandomSearch, RandomSettings
from .runner import Evaluator, SearchResult, result_of, run_search, step
from .state import Candidate, Entry, GenerationReport, Record, SearchState

ALGORITHMS: dict[str, type[SearchAlgorithm]] = {
    cls.name: cls for cls in (GeneticAlgorithm, NSGA2, RandomSearch)
}


def get_algorithm(name: str) -> type[SearchAlgorithm]:
    """The algorithm class registered under ``name`` ("hat-ga", "nsga2", "random")."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown search algorithm {name!r}; expected one of {sorted(ALGORITHMS)}"
        ) from None


__all__ = [
    "ALGORITHMS",
    "Candidate",
    "Constraint",
    "Entry",
    "Evaluator",
    "GASettings",
    "GenerationReport",
    "GeneticAlgorithm",
    "GeneticOps",
    "GenomeOps",
    "GridOps",
    "NSGA2",
    "NSGA2Settings",
    "Objective",
    "PreFilter",
    "RandomSearch",
    "RandomSettings",
    "Record",
    "SearchAlgorithm",
    "SearchResult",
    "SearchState",
    "SpaceOps",
    "UnsatisfiableConstraintError",
    "as_genome_ops",
    "crowding_distance",
    "dominates",
    "get_algorithm",
    "hypervolume",
    "non_dominated_mask",
    "non_dominated_sort",
    "nsga2_select",
    "result_of",
    "run_search",
    "step",
]
