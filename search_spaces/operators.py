"""Genetic operators on a `SearchSpace`: sample, mutate, crossover, largest, smallest.

They work on a *full-depth genome*: a flat mapping gene -> int that holds a value for every
layer up to the deepest choice and every expert slot up to the largest expert count, so
mutating a layer count or an expert count can grow a subnet with real genes. A
`SubnetConfig` is expanded to a genome by filling its inactive genes with fresh random
values, operated on gene-wise, repaired (top-k and ende_attn clipped to what the layer's
expert count and the encoder depth allow) and truncated back to the canonical config, so
inactive genes never make two configs differ. Every function draws only from ``rng``.

Gene names (tuples): ``("encoder_embed_dim",)``, ``("encoder_layers",)``, ...;
``(side, i, "heads" | "experts" | "top_k" | "cross_heads" | "ende_attn")`` and
``(side, i, "dim", j)`` for expert j's FFN dim and ``(side, i, "bits", j)`` for its weight
precision (only j = 0 when experts are homogeneous: one dim and one precision per layer).
Precision genes exist only in a space with more than one ``expert_bits`` choice: a
full-precision space draws no random number for precision, so its seeded samples,
mutations and crossovers do not depend on the gene's existence. The same holds for the
routing genes ``("encoder_routing",)`` and ``("decoder_routing",)`` (string values), last
in the genome, which exist only when a side has more than one routing choice.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from search_spaces.config import SIDES, TOKEN, SideConfig, SubnetConfig

if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

__all__ = [
    "Gene",
    "crossover",
    "extreme",
    "from_genome",
    "gene_order",
    "largest_dense",
    "mutate",
    "sample",
    "sample_dense",
    "to_genome",
]

Gene = tuple
Genome = dict[Gene, int | str]
# Global genes: each is named as the space's field and the config's attribute of its value.
_GLOBALS = ("encoder_embed_dim", "decoder_embed_dim", "qkv_dim", "encoder_layers", "decoder_layers")
# Per-side genes by side (gene names are the genome's keys, and stay as genomes store them).
_EMBED_GENE = {side: (f"{side}_embed_dim",) for side in SIDES}
_LAYERS_GENE = {side: (f"{side}_layers",) for side in SIDES}
_ROUTING_GENE = {side: (f"{side}_routing",) for side in SIDES}


def _layer_genes(space: SearchSpace, side: str, i: int) -> list[Gene]:
    """The genes of layer ``i`` in dependency order (experts before top-k)."""
    genes: list[Gene] = [(side, i, "heads")]
    if side == "decoder":
        genes += [(side, i, "cross_heads"), (side, i, "ende_attn")]
    genes += [(side, i, "experts"), (side, i, "top_k")]
    slots = max(space.side(side).experts) if space.heterogeneous_experts else 1
    genes += [(side, i, "dim", j) for j in range(slots)]
    if len(space.expert_bits) > 1:
        genes += [(side, i, "bits", j) for j in range(slots)]
    return genes


def gene_order(space: SearchSpace) -> list[Gene]:
    """Every gene of the full-depth genome, globals first (layer counts before the
    ende_attn genes that depend on them)."""
    genes: list[Gene] = [(g,) for g in _GLOBALS]
    for choices in space.sides():
        for i in range(max(choices.layers)):
            genes += _layer_genes(space, choices.name, i)
    return genes + _routing_genes(space)


def _routing_genes(space: SearchSpace) -> list[Gene]:
    return [_ROUTING_GENE[choices.name] for choices in space.sides() if len(choices.routing) > 1]


def _int(genome: Genome, gene: Gene) -> int:
    """An integer gene's value (every gene but the routing ones is an integer)."""
    value = genome[gene]
    assert isinstance(value, int), (gene, value)
    return value


def _domain(space: SearchSpace, genome: Genome, gene: Gene) -> tuple:
    """Allowed values of ``gene`` given the genes before it (already set in ``genome``)."""
    if len(gene) == 1:
        for side, routing_gene in _ROUTING_GENE.items():
            if gene == routing_gene:
                return space.side(side).routing
        return getattr(space, gene[0])  # a global gene: one of _GLOBALS
    choices, i, what = space.side(gene[0]), gene[1], gene[2]
    if what == "heads":
        return choices.heads
    if what == "cross_heads":
        return choices.cross_heads
    if what == "ende_attn":
        return space.allowed_ende_attn(_int(genome, ("encoder_layers",)))
    if what == "experts":
        return choices.experts
    if what == "top_k":
        return choices.allowed_top_k(_int(genome, (choices.name, i, "experts")))
    if what == "bits":
        return space.expert_bits
    return choices.ffn_dim  # "dim"


def _random_genome(space: SearchSpace, rng: random.Random) -> Genome:
    genome: Genome = {}
    for gene in gene_order(space):
        genome[gene] = rng.choice(_domain(space, genome, gene))
    return genome


def _repair(space: SearchSpace, genome: Genome) -> Genome:
    """Clips every dependent gene into its domain (largest allowed value not above it)."""
    for gene in gene_order(space):
        genome[gene] = _clip(_domain(space, genome, gene), genome[gene])
    return genome


def _clip(allowed: tuple, value: int | str) -> int | str:
    """``value`` if allowed, else the largest allowed value below it (else the smallest)."""
    if value in allowed:
        return value
    below = [v for v in allowed if v <= value]
    return max(below) if below else min(allowed)


def to_genome(space: SearchSpace, config: SubnetConfig, rng: random.Random) -> Genome:
    """Full-depth genome of ``config``: its own genes, inactive ones drawn from ``rng``."""
    genome = _random_genome(space, rng)
    for g in _GLOBALS:
        genome[(g,)] = getattr(config, g)
    for view in config.sides():
        side = view.name
        for i, experts in enumerate(view.expert_dims):
            genome[(side, i, "heads")] = view.heads[i]
            genome[(side, i, "experts")] = len(experts)
            genome[(side, i, "top_k")] = view.top_k[i]
            bits = view.expert_bits[i]
            slots = len(experts) if space.heterogeneous_experts else 1
            for j in range(slots):
                genome[(side, i, "dim", j)] = experts[j]
                if len(space.expert_bits) > 1:
                    genome[(side, i, "bits", j)] = bits[j]
            if side == "decoder":
                genome[(side, i, "cross_heads")] = view.cross_heads[i]
                genome[(side, i, "ende_attn")] = view.ende_attn[i]
        gene = _ROUTING_GENE[side]
        if gene in genome and not view.is_dense:  # else inactive: stays random
            genome[gene] = view.routing
    return genome


def from_genome(space: SearchSpace, genome: Genome) -> SubnetConfig:
    """The canonical config of a (repaired) genome: only active layers and experts."""
    encoder, decoder = (_side_of(space, genome, side) for side in SIDES)
    return SubnetConfig.from_sides(encoder, decoder, qkv_dim=_int(genome, ("qkv_dim",)))


def _side_of(space: SearchSpace, genome: Genome, side: str) -> SideConfig:
    """One side of `from_genome`'s config."""
    layers = range(_int(genome, _LAYERS_GENE[side]))
    dims: list[tuple] = []  # of ints: every gene but the routing ones is an integer
    bits: list[tuple] = []
    for i in layers:
        n = _int(genome, (side, i, "experts"))
        slots = range(n) if space.heterogeneous_experts else [0] * n
        dims.append(tuple(genome[(side, i, "dim", j)] for j in slots))
        bits.append(tuple(genome.get((side, i, "bits", j), space.expert_bits[0]) for j in slots))

    def per_layer(what: str) -> tuple:
        return tuple(genome[(side, i, what)] for i in layers)

    routing = genome.get(_ROUTING_GENE[side], space.side(side).routing[0])
    assert isinstance(routing, str), (side, routing)
    return SideConfig(
        name=side,
        embed_dim=_int(genome, _EMBED_GENE[side]),
        expert_dims=tuple(dims),
        expert_bits=tuple(bits),
        heads=per_layer("heads"),
        top_k=per_layer("top_k"),
        cross_heads=per_layer("cross_heads") if side == "decoder" else (),
        ende_attn=per_layer("ende_attn") if side == "decoder" else (),
        routing=routing,
    )


def sample(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    """Each gene uniform over its allowed values (top-k over those ``<=`` the layer's
    experts, ende_attn over those ``<=`` the encoder depth)."""
    return from_genome(space, _random_genome(space, rng))


def sample_dense(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    """A random dense subnet: every gene uniform as in `sample`, except one expert (top-1)
    per layer. Needs 1 among the expert choices of both sides."""
    if 1 not in space.encoder_experts or 1 not in space.decoder_experts:
        raise ValueError(f"space {space.name!r}: 1 expert is not a choice, no dense subnet")
    genome: Genome = {}
    for gene in gene_order(space):
        genome[gene] = 1 if gene[-1] in ("experts", "top_k") else rng.choice(
            _domain(space, genome, gene))
    return from_genome(space, genome)


def mutate(space: SearchSpace, config: SubnetConfig, prob: float, rng: random.Random) -> SubnetConfig:
    """HAT's mutation: every gene of the full-depth genome is redrawn uniformly from its
    allowed values with probability ``prob``; dependent genes left alone are repaired."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mutate: prob must be in [0, 1], got {prob!r}")
    space.validate(config, source="mutate: parent")
    genome = to_genome(space, config, rng)
    for gene in gene_order(space):
        if rng.random() < prob:
            genome[gene] = rng.choice(_domain(space, genome, gene))
        else:  # kept, but clipped if an earlier mutation changed what it depends on
            genome[gene] = _clip(_domain(space, genome, gene), genome[gene])
    return from_genome(space, genome)


def crossover(space: SearchSpace, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
    """HAT's uniform crossover on full-depth genomes: each gene from ``a`` or ``b`` with
    probability 1/2, then repaired."""
    space.validate(a, source="crossover: parent a")
    space.validate(b, source="crossover: parent b")
    ga, gb = to_genome(space, a, rng), to_genome(space, b, rng)
    child = {g: (ga[g] if rng.random() < 0.5 else gb[g]) for g in gene_order(space)}
    return from_genome(space, _repair(space, child))


def extreme(space: SearchSpace, *, largest: bool) -> SubnetConfig:
    """Every gene at its largest (or smallest) allowed value, in dependency order."""
    pick = max if largest else min
    genome: Genome = {}
    for gene in gene_order(space):
        allowed = _domain(space, genome, gene)
        genome[gene] = _routing_default(allowed) if gene in _routing_genes(space) else pick(allowed)
    return from_genome(space, genome)


def _routing_default(allowed: tuple) -> str:
    """Token routing where the space allows it (routing has no "largest")."""
    return TOKEN if TOKEN in allowed else allowed[0]


def largest_dense(space: SearchSpace) -> SubnetConfig:
    """`extreme(largest=True)` with one expert (top-1) per layer: the widest dense subnet.
    Needs 1 among the expert choices of both sides."""
    genome: Genome = {}
    for gene in gene_order(space):
        allowed = _domain(space, genome, gene)
        genome[gene] = min(allowed) if gene[-1] in ("experts", "top_k") else max(allowed)
    if genome[("encoder", 0, "experts")] != 1 or genome[("decoder", 0, "experts")] != 1:
        raise ValueError(f"space {space.name!r}: 1 expert is not a choice, no dense subnet")
    return from_genome(space, genome)
