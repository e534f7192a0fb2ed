"""Expert precision as a gene: `SubnetConfig.*_expert_bits` and the space key `expert_bits`.

Oracles: config files and keys written before precision was a gene (committed under
results/ and search_spaces/baselines/), keys of operator results computed by the code before
the change (fixed seeds), and hand-written bad inputs. Size against a brute-force count is in
test_search_space_ops.py.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

from search_spaces import SearchSpace, SubnetConfig, available_spaces, load_space
from search_spaces.operators import gene_order
from search_spaces.space import CHOICE_KEYS

REPO = Path(__file__).resolve().parents[1]
BASE = SubnetConfig(
    encoder_embed_dim=32, decoder_embed_dim=24, qkv_dim=32,
    encoder_expert_dims=((64, 32), (32,)), encoder_heads=(4, 2), encoder_top_k=(1, 1),
    decoder_expert_dims=((32,),), decoder_heads=(2,), decoder_cross_heads=(4,),
    decoder_ende_attn=(1,), decoder_top_k=(1,))


# ---- old files keep their bytes and keys ------------------------------------------------------
def test_committed_subnet_files_round_trip_byte_identically():
    paths = [REPO / "results/demo/subnet/subnet.json", *sorted((REPO / "search_spaces/baselines").glob("*.json"))]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        config = SubnetConfig.from_json(text, source=str(path))
        assert config.is_full_precision
        assert config.to_json(indent=2) + "\n" == text, path
    exported = json.loads((REPO / "results/demo/subnet/config.json").read_text(encoding="utf-8"))
    config = SubnetConfig.from_dict(exported["architecture"])
    assert config.to_dict() == exported["architecture"]
    assert list(config.to_dict()) == list(exported["architecture"])  # same key order too


def test_keys_written_before_the_change_are_unchanged():
    with (REPO / "results/demo/search/candidates.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        config = SubnetConfig.from_json(row["config"])
        assert config.key() == row["key"]
        assert json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":")) == row["config"]


def test_operators_on_old_spaces_draw_what_they_drew_before():
    # keys of sample, sample, mutate(0.3), crossover from random.Random(0), computed with the
    # operators before precision genes existed: a space without expert_bits has no new gene
    expected = {
        "demo": ["d1972b337b05518c", "03bf89f277533ac2", "cb3ab30dac0fe662", "b849e15ddf6fe4a1"],
        "tiny": ["13d3f37c7492ab5a", "85e203369db5823f", "0c626d5797ff797a", "a2577e869ca16775"],
    }
    for name, keys in expected.items():
        space, rng = load_space(name), random.Random(0)
        a, b = space.sample(rng), space.sample(rng)
        m, c = space.mutate(a, 0.3, rng), space.crossover(a, b, rng)
        assert [x.key() for x in (a, b, m, c)] == keys, name
    assert load_space("demo").size() == 2911081752172771200
    assert len(load_space("demo").feature_names()) == 89


def test_old_spaces_write_no_expert_bits():
    for name in available_spaces():
        space = load_space(name)
        if space.expert_bits == (32,):
            written = [k for k in space.to_dict()["choices"] if not k.endswith("_routing")]
            assert written == list(CHOICE_KEYS), name
            assert not any(g[2] == "bits" for g in gene_order(space) if len(g) > 2)
            assert SearchSpace.from_dict(space.to_dict(), source="x") == dataclasses.replace(
                space, source="x")


# ---- the config fields ------------------------------------------------------------------------
def test_default_bits_are_32_nested_like_the_dims():
    assert BASE.encoder_expert_bits == ((32, 32), (32,))
    assert BASE.decoder_expert_bits == ((32,),)
    explicit = dataclasses.replace(BASE, encoder_expert_bits=((32, 32), (32,)),
                                   decoder_expert_bits=((32,),))
    assert explicit == BASE and hash(explicit) == hash(BASE) and explicit.key() == BASE.key()
    assert "encoder_expert_bits" not in BASE.to_dict()
    # full precision follows the dims through replace
    deeper = dataclasses.replace(BASE, decoder_expert_dims=((32, 64, 32), (64,)),
                                 decoder_heads=(2, 2), decoder_cross_heads=(4, 4),
                                 decoder_ende_attn=(1, 1), decoder_top_k=(1, 1))
    assert deeper.decoder_expert_bits == ((32, 32, 32), (32,))


def test_quantized_config_round_trips_and_changes_the_key():
    q = dataclasses.replace(BASE, encoder_expert_bits=((8, 32), (4,)))
    assert not q.is_full_precision
    data = q.to_dict()
    assert data["encoder_expert_bits"] == [[8, 32], [4]]
    assert data["decoder_expert_bits"] == [[32]]
    assert SubnetConfig.from_json(q.to_json()) == q
    assert SubnetConfig.from_json(q.to_json(indent=2)).key() == q.key() != BASE.key()
    keys = {BASE.key(), q.key()}
    for bits in (((4, 32), (4,)), ((8, 8), (4,)), ((8, 32), (8,))):
        keys.add(dataclasses.replace(BASE, encoder_expert_bits=bits).key())
    assert len(keys) == 5


@pytest.mark.parametrize(
    ("bits", "match"),
    [
        ([[8, 32], [16]], r"key 'encoder_expert_bits'\[1\]\[0\] = 16 is not a supported precision"),
        ([[8, 32]], r"key 'encoder_expert_bits' has 1 layers, expected one per active layer \(2\)"),
        ([[8], [4]], r"key 'encoder_expert_bits'\[0\] has 1 entries, expected one per expert \(2\)"),
        ([[8, "4"], [4]], r"key 'encoder_expert_bits'\[0\]: expected an integer, got '4'"),
        (8, r"key 'encoder_expert_bits' must be a list of lists"),
    ],
)
def test_bad_bits_are_rejected_naming_the_key(bits, match):
    data = BASE.to_dict()
    data["encoder_expert_bits"] = bits
    with pytest.raises(ValueError, match=match):
        SubnetConfig.from_dict(data, source="my.json")


def test_all_32_bits_of_the_wrong_shape_are_rejected_from_a_file():
    data = BASE.to_dict()
    data["decoder_expert_bits"] = [[32], [32]]
    with pytest.raises(ValueError, match=r"'decoder_expert_bits' has 2 layers"):
        SubnetConfig.from_dict(data, source="my.json")


# ---- the space key ----------------------------------------------------------------------------
def _tiny_data(**extra) -> dict:
    data = load_space("tiny").to_dict()
    data["choices"].update(extra)
    return data


def test_space_bits_choices_validate_members():
    space = SearchSpace.from_dict(_tiny_data(expert_bits=[32, 8]), source="q.yaml")
    assert space.expert_bits == (8, 32)
    assert space.to_dict()["choices"]["expert_bits"] == [8, 32]
    assert SearchSpace.from_dict(space.to_dict(), source="q.yaml") == space
    config = dataclasses.replace(space.smallest(), encoder_expert_bits=((4,),) * space.smallest().encoder_layers)
    with pytest.raises(ValueError, match=r"c.json: key 'encoder_expert_bits'\[0\]\[0\] = 4 is not in "
                                         r"space 'tiny': allowed \[8, 32\]"):
        space.validate(config, source="c.json")
    # a space without the key holds full precision only
    with pytest.raises(ValueError, match=r"'encoder_expert_bits'\[0\]\[0\] = 4 .*allowed \[32\]"):
        load_space("tiny").validate(config)


@pytest.mark.parametrize(
    ("bits", "match"),
    [
        ([32, 16], r"q.yaml: key 'choices.expert_bits': value 16 is not a supported expert precision"),
        ([], r"q.yaml: key 'choices.expert_bits': the choice list is empty"),
        (8, r"q.yaml: key 'choices.expert_bits': expected a non-empty list"),
        ([8, 8], r"q.yaml: key 'choices.expert_bits': duplicate choice"),
    ],
)
def test_bad_space_bits_are_rejected_naming_the_key(bits, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace.from_dict(_tiny_data(expert_bits=bits), source="q.yaml")


def test_homogeneous_space_shares_one_precision_per_layer():
    data = _tiny_data(expert_bits=[32, 8])
    data["heterogeneous_experts"] = False
    space = SearchSpace.from_dict(data, source="h.yaml")
    rng = random.Random(3)
    seen = set()
    for _ in range(200):
        c = space.mutate(space.sample(rng), 0.5, rng)
        space.validate(c)
        for layer in c.encoder_expert_bits + c.decoder_expert_bits:
            assert len(set(layer)) == 1
            seen.add(layer[0])
    assert seen == {8, 32}
    mixed = dataclasses.replace(space.largest(), encoder_expert_bits=((8, 32, 32), (32, 32, 32)))
    with pytest.raises(ValueError, match=r"'encoder_expert_bits'\[0\] = \[8, 32, 32\].*one precision"):
        space.validate(mixed)


def test_demo_q_is_demo_plus_bits():
    demo, q = load_space("demo").to_dict(), load_space("demo_q").to_dict()
    assert q["choices"].pop("expert_bits") == [4, 8, 32]
    assert q["choices"] == demo["choices"] and q["supernet"] == demo["supernet"]
    assert q["heterogeneous_experts"] == demo["heterogeneous_experts"]
    space = load_space("demo_q")
    assert space.largest().is_full_precision
    assert set(b for layer in space.smallest().encoder_expert_bits for b in layer) == {4}


def test_genetic_operators_keep_bits_valid_and_reach_every_precision():
    space = load_space("demo_q")
    rng = random.Random(0)
    seen: set[int] = set()
    pop = [space.sample(rng) for _ in range(20)]
    for _ in range(100):
        a, b = rng.sample(pop, 2)
        child = space.mutate(space.crossover(a, b, rng), 0.3, rng)
        space.validate(child)
        assert SubnetConfig.from_json(child.to_json()) == child
        seen.update(x for layer in child.encoder_expert_bits + child.decoder_expert_bits for x in layer)
        pop[rng.randrange(len(pop))] = child
    assert seen == {4, 8, 32}


def test_crossover_bits_come_from_the_parents():
    space = load_space("demo_q")
    rng = random.Random(5)
    checked = 0
    for _ in range(50):
        a, b = space.sample(rng), space.sample(rng)
        c = space.crossover(a, b, rng)
        for side in ("encoder", "decoder"):
            pa, pb = getattr(a, f"{side}_expert_bits"), getattr(b, f"{side}_expert_bits")
            for i, layer in enumerate(getattr(c, f"{side}_expert_bits")):
                for j, bits in enumerate(layer):
                    # a slot active in both parents inherits one of theirs (precision genes
                    # have no dependency, so repair never changes them)
                    if i < min(len(pa), len(pb)) and j < min(len(pa[i]), len(pb[i])):
                        assert bits in (pa[i][j], pb[i][j])
                        checked += 1
    assert checked > 100


def test_features_of_a_bits_space_include_the_precisions():
    space = load_space("demo_q")
    names = space.feature_names()
    assert names[:89] == load_space("demo").feature_names()
    config = dataclasses.replace(space.largest(), encoder_expert_bits=((8,) * 4, (4,) * 4, (32,) * 4))
    values = dict(zip(names, space.features(config), strict=True))
    assert values["encoder_expert_bits_mean"] == pytest.approx((8 + 4 + 32) / 3)
    assert values["enc1_expert3_bits"] == 4.0 and values["dec0_expert0_bits"] == 32.0


def test_space_show_prints_the_bits_and_the_larger_size(capsys):
    from automoe.cli import main

    assert main(["space", "show", "demo_q", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["choices"]["expert_bits"] == [4, 8, 32]
    assert info["size"] == load_space("demo_q").size() > load_space("demo").size()
    assert main(["space", "show", "demo_q"]) == 0
    assert re.search(r"^  expert_bits +\[4, 8, 32\]$", capsys.readouterr().out, re.M)
    assert main(["space", "show", "demo"]) == 0
    assert "expert_bits" not in capsys.readouterr().out
