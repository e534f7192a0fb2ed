"""Synthetic problems with known answers, for the algorithm tests.

`DiscreteFront` is a discrete M-objective problem whose Pareto front is known in closed
form; its genomes are `evolution.GridOps` integer vectors. The first M-1 genes place a
point on the front, the rest must hit fixed targets::

    g(x)     = sum_j |x_j - t_j|            over the "distance" genes j >= M-1
    f_i(x)   = x_i + g(x)                   for i < M-1
    f_M-1(x) = (M-1)(L-1) - sum_{i<M-1} x_i + g(x)

All objectives are minimised. Any g > 0 is dominated by the same position genes with
g = 0 (every objective drops by g), and the g = 0 points are mutually non-dominated (the
objectives sum to a constant), so the front is exactly the L^(M-1) position choices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from evolution import GridOps
from evolution.objectives import Objective

__all__ = ["DiscreteFront"]


@dataclass(frozen=True)
class DiscreteFront:
    """The problem above; objectives are named f0..f{M-1}; ``metrics`` also reports
    ``g`` and ``cost`` (= sum of genes, a cheap metric to constrain)."""

    n_genes: int = 5
    levels: int = 8
    n_objectives: int = 2

    def __post_init__(self) -> None:
        if not 2 <= self.n_objectives <= self.n_genes:
            raise ValueError(f"DiscreteFront: need 2 <= n_objectives <= n_genes, got {self}")

    @property
    def ops(self) -> GridOps:
        """Integer vectors of ``n_genes`` genes in ``0..levels-1``, HAT's operators."""
        return GridOps(self.n_genes, self.levels)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return tuple(Objective(f"f{i}", "min") for i in range(self.n_objectives))

    def targets(self) -> tuple[int, ...]:
        m = self.n_objectives - 1
        return tuple((3 * j + 1) % self.levels for j in range(self.n_genes - m))

    def metrics(self, genome: tuple[int, ...]) -> dict[str, float]:
        m = self.n_objectives - 1
        pos, rest = genome[:m], genome[m:]
        g = sum(abs(x - t) for x, t in zip(rest, self.targets(), strict=True))
        out = {f"f{i}": float(pos[i] + g) for i in range(m)}
        out[f"f{m}"] = float(m * (self.levels - 1) - sum(pos) + g)
        out["g"] = float(g)
        out["cost"] = float(sum(genome))
        return out

    def true_front(self) -> set[tuple[float, ...]]:
        """The Pareto front's objective vectors, from the closed form."""
        m = self.n_objectives - 1
        front = set()
        for pos in itertools.product(range(self.levels), repeat=m):
            genome = tuple(pos) + self.targets()
            values = self.metrics(genome)
            front.add(tuple(values[f"f{i}"] for i in range(self.n_objectives)))
        return front
