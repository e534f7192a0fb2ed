"""`SubnetConfig`: exact JSON round trip, stable key, shape checks, strict from_dict.

Oracles: equality after a round trip, a key computed in a fresh interpreter (hash salts
differ per process), and hand-written malformed inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import SubnetConfig, available_spaces, load_space
from search_spaces.config import ROUTINGS

REPO = Path(__file__).resolve().parents[1]
SPACES = [load_space(n) for n in available_spaces()]


@st.composite
def configs(draw) -> SubnetConfig:
    space = draw(st.sampled_from(SPACES))
    return space.sample(draw(st.randoms(use_true_random=False)))


@st.composite
def raw_configs(draw) -> SubnetConfig:
    """Shape-consistent configs with arbitrary (not space-bound) integers."""
    ints = st.integers(1, 10**6)
    enc, dec = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    experts = st.lists(ints, min_size=1, max_size=4).map(tuple)

    def per(n, strat=ints):
        return tuple(draw(strat) for _ in range(n))

    enc_dims, dec_dims = per(enc, experts), per(dec, experts)
    return SubnetConfig(
        encoder_embed_dim=draw(ints), decoder_embed_dim=draw(ints), qkv_dim=64,
        encoder_expert_dims=enc_dims, encoder_heads=per(enc, st.sampled_from([1, 2, 4, 8])),
        encoder_top_k=tuple(draw(st.integers(1, len(d))) for d in enc_dims),
        decoder_expert_dims=dec_dims, decoder_heads=per(dec, st.sampled_from([1, 2, 64])),
        decoder_cross_heads=per(dec, st.sampled_from([4, 16])),
        decoder_ende_attn=per(dec, st.integers(1, 3)),
        decoder_top_k=tuple(draw(st.integers(1, len(d))) for d in dec_dims),
        encoder_routing=draw(st.sampled_from(ROUTINGS)),
        decoder_routing=draw(st.sampled_from(ROUTINGS)),
    )


@settings(max_examples=100, deadline=None)
@given(st.one_of(configs(), raw_configs()))
def test_json_round_trip_is_exact(config):
    for indent in (None, 2):
        again = SubnetConfig.from_json(config.to_json(indent=indent))
        assert again == config and again.key() == config.key()
        assert type(again.encoder_expert_dims[0]) is tuple  # hashable, not lists
    assert SubnetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    config.check_shape()


@settings(max_examples=50, deadline=None)
@given(configs(), configs())
def test_key_equal_iff_configs_equal(a, b):
    assert (a.key() == b.key()) == (a == b)
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0


def one_field_changes(config: SubnetConfig):
    """(description, config) for every field and every position within it: the config
    with only that one value changed (shape-consistent, not bound to a space)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, int):
            yield f.name, dataclasses.replace(config, **{f.name: value + 8})
            continue
        if isinstance(value, str):  # a routing: every other one
            for other in ROUTINGS:
                if other != value:
                    yield f"{f.name}={other}", dataclasses.replace(config, **{f.name: other})
            continue
        for i, entry in enumerate(value):
            if isinstance(entry, int):
                new = (*value[:i], entry + 1, *value[i + 1:])
                yield f"{f.name}[{i}]", dataclasses.replace(config, **{f.name: new})
                continue
            for e, h in enumerate(entry):  # one expert's hidden size
                layer = (*entry[:e], h + 8, *entry[e + 1:])
                new = (*value[:i], layer, *value[i + 1:])
                yield f"{f.name}[{i}][{e}]", dataclasses.replace(config, **{f.name: new})


def test_key_changes_when_any_single_value_changes():
    base = SubnetConfig(
        encoder_embed_dim=32, decoder_embed_dim=24, qkv_dim=32,
        encoder_expert_dims=((64, 32), (32,)), encoder_heads=(4, 2), encoder_top_k=(1, 1),
        decoder_expert_dims=((32,), (64, 32, 64)), decoder_heads=(2, 4),
        decoder_cross_heads=(4, 2), decoder_ende_attn=(1, 2), decoder_top_k=(1, 2))
    changes = list(one_field_changes(base))
    names = {what.split("[")[0].split("=")[0] for what, _ in changes}
    assert names == {f.name for f in dataclasses.fields(SubnetConfig)}
    keys = {base.key()}
    for what, changed in changes:
        assert changed != base and changed.key() != base.key(), what
        keys.add(changed.key())
    assert len(keys) == len(changes) + 1  # and no two of the changes collide


def test_routing_is_canonical_and_token_routing_keeps_the_json():
    moe = SubnetConfig(
        encoder_embed_dim=32, decoder_embed_dim=24, qkv_dim=32,
        encoder_expert_dims=((64, 32),), encoder_heads=(4,), encoder_top_k=(1,),
        decoder_expert_dims=((32,),), decoder_heads=(2,), decoder_cross_heads=(4,),
        decoder_ende_attn=(1,), decoder_top_k=(1,))
    assert "encoder_routing" not in moe.to_dict() and "decoder_routing" not in moe.to_dict()
    task = dataclasses.replace(moe, encoder_routing="task", decoder_routing="task")
    # the dense decoder routes nothing: its routing is the one canonical value
    assert task.decoder_routing == "token" and task.encoder_routing == "task"
    assert task.to_dict()["encoder_routing"] == "task" and "decoder_routing" not in task.to_dict()
    assert SubnetConfig.from_json(task.to_json()) == task and task.key() != moe.key()
    with pytest.raises(ValueError, match="encoder_routing.*'expert'"):
        SubnetConfig.from_dict({**moe.to_dict(), "encoder_routing": "expert"}, source="c.json")


def test_key_is_stable_across_processes():
    config = load_space("demo").largest()
    code = ("from search_spaces import load_space\n"
            "print(load_space('demo').largest().key())\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="random")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == config.key()


def test_derived_properties():
    c = load_space("tiny").largest()
    assert (c.encoder_layers, c.decoder_layers) == (2, 2)
    assert c.encoder_experts == (3, 3) and not c.is_dense
    assert load_space("hat_wmt14").largest().is_dense


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("qkv_dim"), r"missing key\(s\) \['qkv_dim'\]"),
        (lambda d: d.update(colour=1), r"unknown key\(s\) \['colour'\]"),
        (lambda d: d.update(qkv_dim="32"), r"'qkv_dim': expected an integer, got '32'"),
        (lambda d: d.update(qkv_dim=True), r"'qkv_dim': expected an integer, got True"),
        (lambda d: d.update(encoder_heads=[4, 4]), r"'encoder_heads' has 2 entries"),
        (lambda d: d.update(encoder_top_k=[3]), r"'encoder_top_k'\[0\] = 3 must be in 1..1"),
        (lambda d: d.update(encoder_expert_dims=[[]]), r"'encoder_expert_dims'\[0\] has no expert"),
        (lambda d: d.update(decoder_heads=[3]), r"'decoder_heads'\[0\] = 3 does not divide"),
        (lambda d: d.update(decoder_expert_dims=5), r"'decoder_expert_dims' must be a list"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_key(edit, match):
    data = load_space("tiny").smallest().to_dict()
    edit(data)
    with pytest.raises(ValueError, match=match) as err:
        SubnetConfig.from_dict(data, source="c.json")
    assert str(err.value).startswith("c.json")


def test_from_json_rejects_bad_json_and_non_objects():
    with pytest.raises(ValueError, match="x.json: not valid JSON"):
        SubnetConfig.from_json("{", source="x.json")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        SubnetConfig.from_json("[1]")


def test_config_is_frozen():
    c = load_space("tiny").smallest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.qkv_dim = 1  # type: ignore[misc]
