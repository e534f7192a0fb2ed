"""A `GenomeOps` over fixed-length integer vectors: ``n_var`` genes, each a level in
``0..levels-1``. The synthetic problems of the tests and the benchmarks on continuous
problems (`automoe.bench.known_fronts`, a grid of levels per variable) search it.

Two mutations. ``"redraw"`` is HAT's, the one `search_spaces.SearchSpace` uses: a
mutated gene is drawn uniformly from all its levels, the right move for unordered
choices. ``"local"`` treats the levels as ordered: a mutated gene moves to a nearby level,
drawn by polynomial mutation (Deb and Goyal 1996, as pymoo's ``PM`` implements it:
distribution index ``eta``, bounded by the range) on the level index, rounded to the
grid; a move that rounds to zero becomes a one-level step, so every mutated gene changes.
With ``eta`` 20 most moves stay within a few percent of the range. Crossover is HAT's
uniform gene exchange in both.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GridOps", "MUTATIONS"]

MUTATIONS = ("redraw", "local")


@dataclass(frozen=True)
class GridOps:
    """`evolution.GenomeOps` over ``tuple[int, ...]`` of length ``n_var``, each gene in
    ``0..levels-1``.

    Attributes:
        n_var: genes per genome.
        levels: values per gene.
        mutation: "redraw" (HAT's uniform redraw) or "local" (polynomial mutation on the
            ordered levels; see the module docstring).
        eta: polynomial mutation's distribution index ("local" only); larger is more local.
    """

    n_var: int
    levels: int
    mutation: str = "redraw"
    eta: float = 20.0

    def __post_init__(self) -> None:
        if self.n_var < 1 or self.levels < 2:
            raise ValueError(f"GridOps: need n_var >= 1 and levels >= 2, got {self}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"GridOps: unknown mutation {self.mutation!r}; expected one of "
                             f"{list(MUTATIONS)}")
        if not self.eta > 0:
            raise ValueError(f"GridOps: eta must be > 0, got {self.eta!r}")

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randrange(self.levels) for _ in range(self.n_var))

    def mutate(self, genome: tuple[int, ...], prob: float, rng: random.Random
               ) -> tuple[int, ...]:
        """Each gene mutated with probability ``prob``, by this ops' ``mutation``."""
        if self.mutation == "local":
            return tuple(self._step(g, rng) if rng.random() < prob else g for g in genome)
        return tuple(rng.randrange(self.levels) if rng.random() < prob else g for g in genome)

    def _step(self, level: int, rng: random.Random) -> int:
        """A level near ``level``: polynomial mutation on [0, levels-1], rounded and
        clipped; at least one level away."""
        top = self.levels - 1
        u, power = rng.random(), 1.0 / (self.eta + 1.0)
        if u <= 0.5:
            below = level / top  # pymoo's delta1: room below, as a share of the range
            val = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - below) ** (self.eta + 1.0)
            delta = val ** power - 1.0
        else:
            above = (top - level) / top  # delta2
            val = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - above) ** (self.eta + 1.0)
            delta = 1.0 - val ** power
        moved = min(top, max(0, round(level + delta * top)))
        if moved != level:
            return moved
        down = (u <= 0.5 and level > 0) or level == top
        return level - 1 if down else level + 1

    def crossover(self, a: tuple[int, ...], b: tuple[int, ...], rng: random.Random
                  ) -> tuple[int, ...]:
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))

    def key(self, genome: tuple[int, ...]) -> str:
        return hashlib.sha256(",".join(map(str, genome)).encode()).hexdigest()[:16]

    def to_json(self, genome: tuple[int, ...]) -> list[int]:
        return list(genome)

    def from_json(self, data: Any) -> tuple[int, ...]:
        if (not isinstance(data, list) or len(data) != self.n_var
                or not all(isinstance(g, int) and 0 <= g < self.levels for g in data)):
            raise ValueError(f"GridOps: expected {self.n_var} integers in "
                             f"0..{self.levels - 1}, got {data!r}")
        return tuple(data)

    def all_genomes(self) -> Iterator[tuple[int, ...]]:
        """Every genome, in lexicographic order (levels ** n_var of them)."""
        return itertools.product(range(self.levels), repeat=self.n_var)

    def decode(self, genomes: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """[B, n_var] genomes -> [B, n_var] points of the unit cube (level / (levels-1))."""
        return np.asarray(genomes, dtype=float).reshape(-1, self.n_var) / (self.levels - 1)
