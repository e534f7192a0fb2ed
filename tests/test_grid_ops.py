"""`evolution.GridOps`, the integer-vector genome: its two mutations against their
definitions (HAT's uniform redraw draw for draw; the local step's median against
polynomial mutation's closed form), the genes they change, and seeded searches with each."""

from __future__ import annotations

import random
import statistics

import pytest
from synthetic_problems import DiscreteFront

from evolution import NSGA2, GenomeOps, GridOps, NSGA2Settings, run_search


def _changed(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_grid_ops_are_genome_ops_with_a_strict_codec():
    ops = GridOps(4, 5, mutation="local")
    assert isinstance(ops, GenomeOps)
    genome = ops.sample(random.Random(0))
    assert ops.from_json(ops.to_json(genome)) == genome
    assert len(list(ops.all_genomes())) == 5 ** 4
    assert ops.decode([(0, 1, 2, 4)]).tolist() == [[0.0, 0.25, 0.5, 1.0]]
    for bad in ([0, 1, 2, 5], [0, 1, 2], "0123", [0, 1, 2, 3.0]):
        with pytest.raises(ValueError, match="0..4"):
            ops.from_json(bad)
    for kwargs, message in (({"mutation": "gauss"}, "unknown mutation 'gauss'"),
                            ({"eta": 0.0}, "eta must be > 0"), ({"levels": 1}, "levels >= 2")):
        with pytest.raises(ValueError, match=message):
            GridOps(**{"n_var": 3, "levels": 4, **kwargs})


def test_redraw_is_hats_operator_draw_for_draw():
    """The default mutation consumes the generator exactly as HAT's per-gene redraw, so
    runs recorded before the local mutation existed replay unchanged."""
    ops, rng, hat = GridOps(30, 1001), random.Random(5), random.Random(5)
    genome = ops.sample(random.Random(1))
    for prob in (0.3, 1 / 30, 1.0):
        got = ops.mutate(genome, prob, rng)
        want = tuple(hat.randrange(1001) if hat.random() < prob else g for g in genome)
        assert got == want


@pytest.mark.parametrize("levels", [2, 3, 11, 1001])
def test_local_mutation_stays_on_the_grid_and_always_moves_a_mutated_gene(levels):
    ops, rng = GridOps(8, levels, mutation="local"), random.Random(levels)
    for _ in range(300):
        genome = ops.sample(rng)
        child = ops.mutate(genome, 1.0, rng)
        assert all(isinstance(g, int) and 0 <= g < levels for g in child)
        assert _changed(genome, child) == 8  # every gene mutated, every one moved
    edges = (0,) * 4 + (levels - 1,) * 4  # at a bound the step goes inward
    assert all(0 <= g < levels for g in ops.mutate(edges, 1.0, rng))
    if levels == 2:
        assert ops.mutate(edges, 1.0, rng) == (1,) * 4 + (0,) * 4


def test_both_mutations_change_the_expected_number_of_genes_at_rate_one_over_n():
    n, levels, draws = 30, 1001, 4000
    rng = random.Random(0)
    parents = [GridOps(n, levels).sample(rng) for _ in range(draws)]
    for mutation, expected in (("local", 1.0),  # n * 1/n, every mutated gene moves
                               ("redraw", 1.0 - 1 / levels)):  # a redraw may hit the same
        ops = GridOps(n, levels, mutation=mutation)
        changed = [_changed(p, ops.mutate(p, 1 / n, rng)) for p in parents]
        # binomial(30, 1/30): sd 0.98 per child, 0.016 for the mean of 4,000
        assert statistics.mean(changed) == pytest.approx(expected, abs=0.06), mutation


def test_local_steps_are_polynomial_mutations_and_far_shorter_than_redraws():
    """From the middle of 1,001 levels the bounds are out of reach, and polynomial
    mutation's |step| / range has median 1 - 0.5 ** (1 / (eta + 1)): 32.5 levels at
    eta 20, against 250 for a uniform redraw."""
    levels, rng = 1001, random.Random(0)
    middle = (500,)
    local, redraw = GridOps(1, levels, mutation="local"), GridOps(1, levels)
    local_steps = [abs(local.mutate(middle, 1.0, rng)[0] - 500) for _ in range(20000)]
    redraw_steps = [abs(redraw.mutate(middle, 1.0, rng)[0] - 500) for _ in range(20000)]
    closed_form = 1000 * (1 - 0.5 ** (1 / 21))
    assert statistics.median(local_steps) == pytest.approx(closed_form, abs=2.0)
    assert statistics.median(redraw_steps) == pytest.approx(250, abs=10)
    assert max(local_steps) < 500 and min(local_steps) >= 1


@pytest.mark.parametrize("mutation", ["redraw", "local"])
def test_seeded_searches_with_either_mutation_are_reproducible(mutation):
    problem = DiscreteFront(n_genes=6, levels=10, n_objectives=2)
    ops = GridOps(problem.n_genes, problem.levels, mutation=mutation)

    def run(seed: int):
        algo = NSGA2(ops, objectives=problem.objectives,
                     settings=NSGA2Settings(population_size=12, iterations=6,
                                            mutation_prob=1 / problem.n_genes))
        result = run_search(algo, lambda gs: [problem.metrics(g) for g in gs], seed=seed)
        return [(r.generation, r.key, r.origin) for r in result.records]

    assert run(3) == run(3)
    assert run(3) != run(4)
