"""Genetic operators and `size()` on random small spaces (hypothesis).

Oracles: a brute-force enumeration written here from the rules in docs/search_space.md
(independent of operators.py and counting.py) gives the exact set of subnets of a space;
`size()` must equal its length, `contains` must agree with it, and sampling / mutation
must reach every member of a micro space. Validity of every operator result is checked
with `validate`.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from search_spaces import SearchSpace, SubnetConfig, load_space


def _subset(pool, max_size=2):
    return st.lists(st.sampled_from(pool), min_size=1, max_size=max_size, unique=True)


@st.composite
def spaces(draw, *, layers=(1, 2, 3), experts=(1, 2, 3), ffn=(4, 8, 16)) -> SearchSpace:
    """A random valid space with small dims."""
    enc_layers = draw(_subset(list(layers)))
    expert_choices = {s: draw(_subset(list(experts))) for s in ("encoder", "decoder")}
    top_k = {
        s: sorted(set(draw(_subset(list(range(1, max(e) + 1)))))
                  | {draw(st.integers(1, min(e)))})
        for s, e in expert_choices.items()
    }
    ende = set(draw(_subset([a for a in (1, 2, 3) if a <= max(enc_layers)])))
    ende.add(draw(st.integers(1, min(enc_layers))))
    choices = {
        "encoder_embed_dim": draw(_subset([8, 12])),
        "decoder_embed_dim": draw(_subset([8, 12])),
        "qkv_dim": draw(st.sampled_from([[8], [8, 16]])),
        "encoder_layers": enc_layers,
        "decoder_layers": draw(_subset(list(layers))),
        "encoder_ffn_dim": draw(_subset(list(ffn))),
        "decoder_ffn_dim": draw(_subset(list(ffn))),
        "encoder_heads": draw(_subset([1, 2, 4])),
        "decoder_heads": draw(_subset([1, 2, 4])),
        "decoder_cross_heads": draw(_subset([1, 2, 4])),
        "decoder_ende_attn": sorted(ende),
        "encoder_experts": expert_choices["encoder"],
        "decoder_experts": expert_choices["decoder"],
        "encoder_top_k": top_k["encoder"],
        "decoder_top_k": top_k["decoder"],
    }
    if draw(st.booleans()):  # optional key; absent means full precision only
        choices["expert_bits"] = draw(_subset([4, 8, 32]))
    for side in ("encoder", "decoder"):  # optional keys; absent means token routing only
        if draw(st.booleans()):
            choices[f"{side}_routing"] = draw(_subset(["token", "sentence", "task"], 3))
    data = {"name": "h", "heterogeneous_experts": draw(st.booleans()), "choices": choices}
    return SearchSpace.from_dict(data, source="<hypothesis>")


small_spaces = spaces(layers=(1, 2), experts=(1, 2, 3), ffn=(4, 8))


# ---- the brute-force oracle ----------------------------------------------------------------
def _layer_options(space: SearchSpace, side: str, encoder_layers: int) -> list[tuple]:
    """Every per-layer gene tuple over a superset of the choices, filtered by the rules:
    experts among the choices, top-k <= experts, one dim and one precision per layer unless
    heterogeneous, ende_attn <= encoder depth, precisions among expert_bits (32 if absent)."""
    ffn = getattr(space, f"{side}_ffn_dim")
    cross = space.decoder_cross_heads if side == "decoder" else (None,)
    ende = space.decoder_ende_attn if side == "decoder" else (None,)
    allowed_bits = set(space.to_dict()["choices"].get("expert_bits", [32]))
    bits_pool = sorted(allowed_bits | {4})  # the choices plus one outside them when they lack 4
    out = []
    for heads, c, a, n, k in itertools.product(
        getattr(space, f"{side}_heads"), cross, ende, range(1, 5), getattr(space, f"{side}_top_k")
    ):
        for dims, bits in itertools.product(itertools.product(ffn, repeat=n),
                                            itertools.product(bits_pool, repeat=n)):
            ok = (n in getattr(space, f"{side}_experts") and k <= n
                  and (space.heterogeneous_experts or len(set(dims)) == len(set(bits)) == 1)
                  and (a is None or a <= encoder_layers)
                  and set(bits) <= allowed_bits)
            out.append(((heads, c, a, k, dims, bits), ok))
    return out


def _build(space, emb_e, emb_d, qkv, enc, dec, routing=("token", "token")) -> SubnetConfig:
    return SubnetConfig(
        encoder_embed_dim=emb_e, decoder_embed_dim=emb_d, qkv_dim=qkv,
        encoder_expert_dims=tuple(g[4] for g in enc), encoder_heads=tuple(g[0] for g in enc),
        encoder_top_k=tuple(g[3] for g in enc),
        decoder_expert_dims=tuple(g[4] for g in dec), decoder_heads=tuple(g[0] for g in dec),
        decoder_cross_heads=tuple(g[1] for g in dec), decoder_ende_attn=tuple(g[2] for g in dec),
        decoder_top_k=tuple(g[3] for g in dec),
        encoder_expert_bits=tuple(g[5] for g in enc), decoder_expert_bits=tuple(g[5] for g in dec),
        encoder_routing=routing[0], decoder_routing=routing[1],
    )


def brute_force(space: SearchSpace) -> set[SubnetConfig]:
    members = set()
    for emb_e, emb_d, qkv, le, ld in itertools.product(
        space.encoder_embed_dim, space.decoder_embed_dim, space.qkv_dim,
        space.encoder_layers, space.decoder_layers,
    ):
        enc_ok = [g for g, ok in _layer_options(space, "encoder", le) if ok]
        dec_ok = [g for g, ok in _layer_options(space, "decoder", le) if ok]
        for enc in itertools.product(enc_ok, repeat=le):
            for dec in itertools.product(dec_ok, repeat=ld):
                for routing in itertools.product(space.encoder_routing, space.decoder_routing):
                    # a dense side routes nothing: SubnetConfig names it "token" whatever
                    # the space allows, so such configs collapse into one
                    members.add(_build(space, emb_e, emb_d, qkv, enc, dec, routing))
    return members


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(small_spaces)
def test_size_equals_brute_force_count(space):
    assume(space.size() <= 1500)
    members = brute_force(space)
    assert space.size() == len(members)
    assert all(space.contains(c) for c in members)


@settings(max_examples=40, deadline=None)
@given(spaces(layers=(1, 2), experts=(1, 2, 3), ffn=(4, 8)), st.randoms(use_true_random=False))
def test_contains_agrees_with_the_rules_on_rule_breaking_layers(space, rng):
    """Putting a layer the rules reject (or accept) into a valid config flips `contains`."""
    base = space.sample(rng)
    le = base.encoder_layers
    for side in ("encoder", "decoder"):
        options = _layer_options(space, side, le)
        for genes, ok in rng.sample(options, min(len(options), 25)):
            enc = [(h, None, None, k, d, b) for h, k, d, b in zip(
                base.encoder_heads, base.encoder_top_k, base.encoder_expert_dims,
                base.encoder_expert_bits, strict=True)]
            dec = list(zip(base.decoder_heads, base.decoder_cross_heads, base.decoder_ende_attn,
                           base.decoder_top_k, base.decoder_expert_dims, base.decoder_expert_bits,
                           strict=True))
            (enc if side == "encoder" else dec)[0] = genes
            config = _build(space, base.encoder_embed_dim, base.decoder_embed_dim, base.qkv_dim,
                            enc, dec, (space.encoder_routing[0], space.decoder_routing[0]))
            assert space.contains(config) == ok, (genes, ok)


def test_size_of_a_hand_counted_space():
    # one layer each side, 2 ffn dims, experts {1, 2}, top-k {1, 2}, heterogeneous:
    # per layer: n=1 -> 1 top-k * 2 dims; n=2 -> 2 top-k * 4 ordered dim pairs = 10
    data = {"name": "hand", "heterogeneous_experts": True, "choices": {
        "encoder_embed_dim": [8], "decoder_embed_dim": [8], "qkv_dim": [8],
        "encoder_layers": [1], "decoder_layers": [1], "encoder_ffn_dim": [4, 8],
        "decoder_ffn_dim": [4, 8], "encoder_heads": [2], "decoder_heads": [2],
        "decoder_cross_heads": [2], "decoder_ende_attn": [1], "encoder_experts": [1, 2],
        "decoder_experts": [1, 2], "encoder_top_k": [1, 2], "decoder_top_k": [1, 2]}}
    space = SearchSpace.from_dict(data)
    assert space.size() == 10 * 10
    data["heterogeneous_experts"] = False  # n=2 -> 2 top-k * 2 shared dims: 2 + 4 = 6
    assert SearchSpace.from_dict(data).size() == 6 * 6


def test_size_of_a_hand_counted_space_with_bits():
    # as above with expert_bits [8, 32]: an expert has 2 dims x 2 precisions = 4 settings;
    # per layer: n=1 -> 1 top-k * 4; n=2 -> 2 top-k * 16 ordered pairs = 36
    data = {"name": "hand", "heterogeneous_experts": True, "choices": {
        "encoder_embed_dim": [8], "decoder_embed_dim": [8], "qkv_dim": [8],
        "encoder_layers": [1], "decoder_layers": [1], "encoder_ffn_dim": [4, 8],
        "decoder_ffn_dim": [4, 8], "encoder_heads": [2], "decoder_heads": [2],
        "decoder_cross_heads": [2], "decoder_ende_attn": [1], "encoder_experts": [1, 2],
        "decoder_experts": [1, 2], "encoder_top_k": [1, 2], "decoder_top_k": [1, 2],
        "expert_bits": [8, 32]}}
    space = SearchSpace.from_dict(data)
    assert space.size() == 36 * 36 == len(brute_force(space))
    data["heterogeneous_experts"] = False  # n=2 -> 2 top-k * 4 shared settings: 4 + 8 = 12
    space = SearchSpace.from_dict(data)
    assert space.size() == 12 * 12 == len(brute_force(space))


def test_shipped_sizes_are_exact_ints():
    assert load_space("tiny").size() == 472_464_512
    assert isinstance(load_space("automoe_wmt14").size(), int)
    assert load_space("automoe_wmt14").size() > 10**45


# ---- operator validity ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(spaces(), st.randoms(use_true_random=False), st.floats(0.0, 1.0))
def test_sample_mutate_crossover_always_valid(space, rng, prob):
    a, b = space.sample(rng), space.sample(rng)
    space.validate(a)
    space.validate(b)
    m = space.mutate(a, prob, rng)
    space.validate(m)
    child = space.crossover(a, m, rng)
    space.validate(child)
    space.validate(space.crossover(b, child, rng))
    space.validate(space.largest())
    space.validate(space.smallest())
    for config in (space.largest(), space.smallest()):
        assert SubnetConfig.from_json(config.to_json()) == config


@settings(max_examples=60, deadline=None)
@given(spaces(), st.randoms(use_true_random=False))
def test_identity_cases(space, rng):
    a = space.sample(rng)
    assert space.mutate(a, 0.0, rng) == a
    assert space.crossover(a, a, rng) == a


@settings(max_examples=60, deadline=None)
@given(spaces(), st.randoms(use_true_random=False))
def test_crossover_genes_come_from_the_parents(space, rng):
    a, b = space.sample(rng), space.sample(rng)
    c = space.crossover(a, b, rng)
    assert c.encoder_embed_dim in (a.encoder_embed_dim, b.encoder_embed_dim)
    assert c.decoder_layers in (a.decoder_layers, b.decoder_layers)
    for i in range(min(a.encoder_layers, b.encoder_layers, c.encoder_layers)):
        assert c.encoder_heads[i] in (a.encoder_heads[i], b.encoder_heads[i])
        assert c.encoder_experts[i] in (a.encoder_experts[i], b.encoder_experts[i])
        k = c.encoder_top_k[i]
        clipped = max(space.allowed_top_k("encoder", c.encoder_experts[i]))
        assert k in (a.encoder_top_k[i], b.encoder_top_k[i]) or k == clipped


def test_operators_use_only_the_given_rng():
    space = load_space("demo")
    random.seed(123)
    state = random.getstate()
    runs = []
    for _ in range(2):
        rng = random.Random(7)
        a = space.sample(rng)
        runs.append((a, space.mutate(a, 0.4, rng), space.crossover(a, space.sample(rng), rng)))
    assert runs[0] == runs[1]
    assert random.getstate() == state


def test_invalid_parent_is_rejected():
    space = load_space("tiny")
    bad = dataclasses.replace(space.smallest(), encoder_embed_dim=999)
    with pytest.raises(ValueError, match="mutate: parent.*encoder_embed_dim.*999"):
        space.mutate(bad, 0.3, random.Random(0))
    with pytest.raises(ValueError, match="crossover: parent b.*999"):
        space.crossover(space.smallest(), bad, random.Random(0))
    with pytest.raises(ValueError, match="prob"):
        space.mutate(space.smallest(), 1.5, random.Random(0))


# ---- reachability and mutation rate -------------------------------------------------------
MICRO = {"name": "micro", "heterogeneous_experts": True, "choices": {
    "encoder_embed_dim": [8], "decoder_embed_dim": [8], "qkv_dim": [8],
    "encoder_layers": [1, 2], "decoder_layers": [1], "encoder_ffn_dim": [4, 8],
    "decoder_ffn_dim": [4], "encoder_heads": [2], "decoder_heads": [2],
    "decoder_cross_heads": [2], "decoder_ende_attn": [1, 2], "encoder_experts": [1, 2],
    "decoder_experts": [1], "encoder_top_k": [1], "decoder_top_k": [1]}}


def test_sampling_and_mutation_reach_every_subnet_of_a_micro_space():
    space = SearchSpace.from_dict(MICRO)
    members = brute_force(space)
    # an encoder layer: 1 expert (2 dims) or 2 experts (4 ordered dim pairs) = 6 settings;
    # at depth 2 the decoder layer may read the last 1 or 2 encoder layers
    assert len(members) == space.size() == 6 + 6**2 * 2
    rng = random.Random(0)
    sampled = {space.sample(rng) for _ in range(3000)}  # rarest subnet: p = 1/256
    assert sampled == members
    mutated = {space.mutate(space.smallest(), 1.0, rng) for _ in range(3000)}
    assert mutated == members  # mutation adds layers and experts with real genes
    crossed = {space.crossover(space.smallest(), space.largest(), rng) for _ in range(500)}
    assert crossed <= members and len(crossed) > 1


def test_routing_genes_reach_every_routing_and_leave_token_spaces_alone():
    space = SearchSpace.from_dict({**MICRO, "choices": {**MICRO["choices"],
                                                         "encoder_routing": ["task", "token"]}})
    members = brute_force(space)
    # every stack with an MoE layer comes twice; the 6 + 36 * 2 stacks hold 2 + 32 all-dense
    assert len(members) == space.size() == 2 * (6 + 6**2 * 2) - (2 + 2**2 * 2)
    rng = random.Random(0)
    assert {space.sample(rng) for _ in range(6000)} == members
    assert {c.encoder_routing for c in members} == {"task", "token"}
    assert space.largest().encoder_routing == "token"  # routing has no "largest"
    # without routing choices there is no routing gene: the seeded draws (keys recorded
    # before routing existed) are unchanged
    plain, rng = SearchSpace.from_dict(MICRO), random.Random(3)
    assert "encoder_routing" not in plain.to_dict()["choices"]
    assert [plain.sample(rng).key() for _ in range(3)] == [
        "f47b8a34992902b1", "f78b2355308f1558", "1d5eaac93b422bd1"]
    demo, rng = load_space("demo"), random.Random(7)
    assert [demo.mutate(demo.sample(rng), 0.3, rng).key() for _ in range(2)] == [
        "3d2c1f154d7e6836", "da89da89782153f7"]


def test_mutation_rate_matches_prob():
    space = load_space("hat_wmt14")
    rng = random.Random(1)
    parent = space.largest()
    n, prob = 3000, 0.3
    changed = sum(space.mutate(parent, prob, rng).encoder_embed_dim != 640 for _ in range(n))
    # a gene is redrawn with prob 0.3 and lands on the other of 2 choices half the time
    assert abs(changed / n - prob / 2) < 0.02
