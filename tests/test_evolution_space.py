"""The algorithms on the real `tiny` search space: SearchSpace's sample/mutate/crossover
driven by the GA, NSGA-II and random search, a constraint on a cheap synthetic metric of
the config, and checkpoints that round-trip through SubnetConfig JSON."""

from __future__ import annotations

import json
import random

import pytest

from evolution import (
    NSGA2,
    Constraint,
    GASettings,
    GeneticAlgorithm,
    NSGA2Settings,
    Objective,
    RandomSearch,
    RandomSettings,
    SearchAlgorithm,
    SpaceOps,
    as_genome_ops,
    run_search,
)
from search_spaces import SubnetConfig, load_space

SPACE = load_space("tiny")
BOUND = 7000.0  # below the median cost of a random tiny subnet (about 7700)


def cost(config: SubnetConfig) -> float:
    """A cheap, params-like metric: embed width x total expert hidden units."""
    enc = config.encoder_embed_dim * sum(sum(d) for d in config.encoder_expert_dims)
    dec = config.decoder_embed_dim * sum(sum(d) for d in config.decoder_expert_dims)
    return float(enc + dec)


def capacity(config: SubnetConfig) -> float:
    """A made-up quality: depth, experts and routed experts all help."""
    return float(
        config.encoder_layers
        + config.decoder_layers
        + sum(config.encoder_experts)
        + sum(config.decoder_experts)
        + sum(config.encoder_top_k)
        + sum(config.decoder_top_k)
    )


class Evaluator:
    def __init__(self) -> None:
        self.configs: list[SubnetConfig] = []
        self.calls = 0

    def __call__(self, configs):
        self.calls += 1
        self.configs += configs
        return [{"capacity": capacity(c)} for c in configs]  # cost comes from the pre_filter


OBJECTIVES = (Objective("capacity", "max"), Objective("cost", "min"))


def make(name: str, iterations: int = 5) -> SearchAlgorithm:
    common = dict(
        objectives=OBJECTIVES,
        constraints=[Constraint("cost", "<=", BOUND)],
        pre_filter=lambda c: {"cost": cost(c)},
    )
    if name == "hat-ga":
        settings = GASettings(
            population_size=12,
            parent_size=4,
            mutation_size=4,
            crossover_size=4,
            iterations=iterations,
        )
        return GeneticAlgorithm(SPACE, settings=settings, **common)
    if name == "nsga2":
        return NSGA2(
            SPACE, settings=NSGA2Settings(population_size=12, iterations=iterations), **common
        )
    return RandomSearch(
        SPACE, settings=RandomSettings(batch_size=12, iterations=iterations), **common
    )


def test_space_is_adapted_and_configs_round_trip():
    ops = as_genome_ops(SPACE)
    assert isinstance(ops, SpaceOps)
    rng = random.Random(0)
    for _ in range(20):
        config = SPACE.sample(rng)
        data = json.loads(json.dumps(ops.to_json(config)))
        back = ops.from_json(data)
        assert back == config and ops.key(back) == config.key()
    bad = {**ops.to_json(SPACE.sample(rng)), "encoder_embed_dim": 16}
    with pytest.raises(ValueError, match="encoder_embed_dim"):
        ops.from_json(bad)  # a config outside the space (another space's checkpoint)


@pytest.mark.parametrize("name", ["hat-ga", "nsga2", "random"])
def test_algorithms_search_the_tiny_space_under_a_constraint(name):
    checkpoints: list[str] = []
    evaluator = Evaluator()
    result = run_search(
        make(name),
        evaluator,
        seed=0,
        checkpoint=lambda data: checkpoints.append(json.dumps(data)),
    )
    # every evaluated config is a member of the space and meets the constraint
    assert evaluator.configs and all(SPACE.contains(c) for c in evaluator.configs)
    assert all(cost(c) <= BOUND for c in evaluator.configs)
    assert len({c.key() for c in evaluator.configs}) == len(evaluator.configs)
    assert evaluator.calls <= 5 and result.evaluations == len(evaluator.configs)
    assert {r.origin for r in result.records if r.generation > 0} <= {
        "parent",
        "mutation",
        "crossover",
        "sample",
    }
    if name != "random":  # the genetic operators really ran
        assert any(r.origin in ("mutation", "crossover") for r in result.records)
    # the front is feasible and non-dominated, and the metrics were merged
    for e in result.front:
        assert e.metrics["cost"] == cost(e.genome) <= BOUND
        assert not any(
            o.metrics["capacity"] >= e.metrics["capacity"]
            and o.metrics["cost"] <= e.metrics["cost"]
            and (o.metrics["capacity"], o.metrics["cost"])
            != (e.metrics["capacity"], e.metrics["cost"])
            for o in result.entries
        )
    # reproducible, seed-dependent, and resumable through SubnetConfig JSON
    algo = make(name)
    final = json.dumps(algo.dump(result.state))
    assert json.dumps(algo.dump(run_search(make(name), Evaluator(), seed=0).state)) == final
    other = run_search(make(name), Evaluator(), seed=1)
    assert [e.key for e in other.entries] != [e.key for e in result.entries]
    resumed = run_search(algo, Evaluator(), resume=json.loads(checkpoints[2]))
    assert json.dumps(algo.dump(resumed.state)) == final


def test_unsatisfiable_constraint_on_the_tiny_space():
    algo = RandomSearch(
        SPACE,
        objectives=OBJECTIVES,
        constraints=[Constraint("cost", "<=", 1000.0)],
        pre_filter=lambda c: {"cost": cost(c)},
        settings=RandomSettings(batch_size=12, iterations=2, max_tries=40),
    )
    with pytest.raises(ValueError) as err:
        run_search(algo, Evaluator(), seed=5)
    rng = random.Random(5)
    smallest = min(cost(SPACE.sample(rng)) for _ in range(40))
    assert smallest > 1000
    assert str(err.value).startswith(
        f"constraint cost<=1000 unsatisfiable: 0 of 40 samples met it, "
        f"smallest cost seen {smallest:g}"
    )
