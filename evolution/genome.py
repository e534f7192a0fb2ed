"""The genome seam: what the search algorithms need from a search space.

The algorithms never look inside a genome. They call six operations, collected in the
`GenomeOps` protocol: three genetic ones (the HAT/AutoMoE operators that
`search_spaces.SearchSpace` implements) and three codec ones (a stable cache key and a
JSON round trip, for checkpoints and result tables). `SpaceOps` adapts a `SearchSpace`
(whose genomes are `SubnetConfig`s) to the full protocol; `as_genome_ops` accepts either.
"""

from __future__ import annotations

import random
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["GenomeOps", "GeneticOps", "SpaceOps", "as_genome_ops"]

G = TypeVar("G")


@runtime_checkable
class GeneticOps(Protocol[G]):
    """Sampling and variation; every call draws only from the given ``rng``."""

    def sample(self, rng: random.Random) -> G: ...

    def mutate(self, genome: G, prob: float, rng: random.Random) -> G:
        """Each gene is resampled with probability ``prob`` (HAT: 0.3)."""
        ...

    def crossover(self, a: G, b: G, rng: random.Random) -> G:
        """One child; each gene from a or b with probability 1/2 (HAT's uniform crossover)."""
        ...


@runtime_checkable
class GenomeOps(GeneticOps[G], Protocol[G]):
    """`GeneticOps` plus the codec the search state and result tables need."""

    def key(self, genome: G) -> str:
        """Stable content hash: equal genomes, equal keys, in every process."""
        ...

    def to_json(self, genome: G) -> Any:
        """JSON-ready data (dicts, lists, numbers, strings)."""
        ...

    def from_json(self, data: Any) -> G:
        """Inverse of `to_json`; raises ValueError on bad data."""
        ...


class SpaceOps:
    """Adapts a `search_spaces.SearchSpace` (genomes are `SubnetConfig`) to `GenomeOps`.

    ``key`` is ``SubnetConfig.key()``, the JSON form is ``to_dict()``, and decoding checks
    the config against the space (``space.validate``) so a checkpoint from another space
    fails loudly instead of searching outside the space.
    """

    def __init__(self, space: GeneticOps) -> None:
        self.space = space

    def sample(self, rng: random.Random) -> Any:
        return self.space.sample(rng)

    def mutate(self, genome: Any, prob: float, rng: random.Random) -> Any:
        return self.space.mutate(genome, prob, rng)

    def crossover(self, a: Any, b: Any, rng: random.Random) -> Any:
        return self.space.crossover(a, b, rng)

    def key(self, genome: Any) -> str:
        return genome.key()

    def to_json(self, genome: Any) -> Any:
        return genome.to_dict()

    def from_json(self, data: Any) -> Any:
        from search_spaces.config import SubnetConfig

        config = SubnetConfig.from_dict(data, source="search state")
        validate = getattr(self.space, "validate", None)
        if validate is not None:
            validate(config, source=f"search state (space {getattr(self.space, 'name', '?')})")
        return config

    def __repr__(self) -> str:
        return f"SpaceOps({getattr(self.space, 'name', self.space)!r})"


def as_genome_ops(ops: object) -> GenomeOps:
    """``ops`` itself when it implements all of `GenomeOps`, a `SpaceOps` adapter when it
    only has the genetic operations (a SearchSpace), else a ValueError."""
    # a SearchSpace may have to_json/from_json of its own (for the space itself)
    from search_spaces.space import SearchSpace

    if isinstance(ops, SearchSpace):
        return SpaceOps(ops)
    if isinstance(ops, GenomeOps):
        return ops
    if isinstance(ops, GeneticOps):
        return SpaceOps(ops)
    missing = [m for m in ("sample", "mutate", "crossover") if not callable(getattr(ops, m, None))]
    raise ValueError(
        f"genome ops {type(ops).__name__}: missing method(s) {missing}; expected a "
        "SearchSpace or an object with sample/mutate/crossover[/key/to_json/from_json]"
    )
