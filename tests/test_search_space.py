"""Loading and validating search spaces; membership checks; features; baselines.

Oracles: hand-written expected values (the HAT spaces' choices as read from HAT's configs,
hand-computed features), and for every malformed file the message must name the file,
the key and the offending value.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search_spaces import SearchSpace, SubnetConfig, SupernetDims, available_spaces, load_space
from search_spaces.space import CHOICE_KEYS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("tiny", "demo", "hat_wmt14", "automoe_wmt14", "hat_iwslt14")


def _tiny_dict() -> dict:
    return yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())


def _write(tmp_path: Path, data: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def dense(*, emb=512, ffn=2048, heads=8, qkv=512, enc=6, dec=6, ende=1) -> SubnetConfig:
    return SubnetConfig(
        encoder_embed_dim=emb, decoder_embed_dim=emb, qkv_dim=qkv,
        encoder_expert_dims=((ffn,),) * enc, encoder_heads=(heads,) * enc, encoder_top_k=(1,) * enc,
        decoder_expert_dims=((ffn,),) * dec, decoder_heads=(heads,) * dec,
        decoder_cross_heads=(heads,) * dec, decoder_ende_attn=(ende,) * dec, decoder_top_k=(1,) * dec,
    )


# ---- shipped spaces ----------------------------------------------------------------------
def test_every_shipped_space_is_listed():
    assert set(SHIPPED) <= set(available_spaces())


def test_shipped_space_loads_and_extremes_validate(space_name):
    space = load_space(space_name)
    assert space.name == space_name and space.source.endswith(f"{space_name}.yaml")
    big, small = space.largest(), space.smallest()
    space.validate(big)
    space.validate(small)
    assert big.encoder_layers == max(space.encoder_layers)
    assert small.decoder_layers == min(space.decoder_layers)
    assert all(d == max(space.encoder_ffn_dim) for e in big.encoder_expert_dims for d in e)
    assert small.is_dense or min(space.encoder_experts) > 1
    # every choice fits the supernet it slices
    assert max(space.encoder_ffn_dim) <= space.supernet.encoder_ffn_dim
    assert max(space.decoder_experts) <= space.supernet.decoder_experts
    assert "largest" in space.dense_baselines()


def test_load_by_path_equals_load_by_name():
    by_name = load_space("tiny")
    by_path = load_space(REPO / "search_spaces" / "tiny.yaml")
    assert dataclasses.replace(by_path, source=by_name.source) == by_name


def test_hat_spaces_match_hat_configs():
    # HAT configs/wmt14.en-de/supertransformer/space0.yml and iwslt14 space1.yml
    hat = load_space("hat_wmt14")
    assert hat.encoder_embed_dim == (512, 640) and hat.qkv_dim == (512,)
    assert hat.encoder_layers == (6,) and hat.decoder_layers == (1, 2, 3, 4, 5, 6)
    assert hat.encoder_ffn_dim == (1024, 2048, 3072) and hat.decoder_heads == (4, 8)
    assert hat.decoder_ende_attn == (1, 2, 3)
    assert hat.encoder_experts == hat.decoder_experts == (1,) and not hat.heterogeneous_experts
    moe = load_space("automoe_wmt14")
    assert moe.encoder_experts == (1, 2, 3, 4, 5, 6) and moe.encoder_top_k == (1,)
    assert moe.heterogeneous_experts
    for key in CHOICE_KEYS:
        if "experts" not in key:
            assert getattr(moe, key) == getattr(hat, key), key
    iwslt = load_space("hat_iwslt14")
    assert iwslt.encoder_ffn_dim == (512, 1024, 2048) and iwslt.encoder_heads == (2, 4)
    # HAT's paper counts ~10^15 subnets of its WMT space: 4 * 6^6 * sum_L 36^L
    assert hat.size() == 4 * 6**6 * sum(36**L for L in range(1, 7))


def test_supernet_defaults_to_largest_choice_and_can_be_larger(tmp_path):
    data = _tiny_dict()
    data["supernet"] = {"encoder_ffn_dim": 128}
    space = load_space(_write(tmp_path, data))
    assert space.supernet.encoder_ffn_dim == 128 and space.supernet.decoder_ffn_dim == 64
    assert isinstance(space.supernet, SupernetDims)


def test_space_is_frozen_and_hashable():
    space = load_space("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.name = "x"  # type: ignore[misc]
    assert hash(space) == hash(load_space("tiny"))
    assert pickle.loads(pickle.dumps(space)) == space  # travels to Ray workers


def test_to_dict_round_trips():
    space = load_space("demo")
    again = SearchSpace.from_dict(space.to_dict(), source=space.source)
    assert again == space


# ---- malformed space files ----------------------------------------------------------------
def _mutated(edit):
    data = _tiny_dict()
    edit(data)
    return data


BAD_SPACES = [
    # (edit, key named in the message, value named in the message)
    (lambda d: d.update(colour="red"), "colour", "colour"),
    (lambda d: d["choices"].update(encoder_ffn=[64]), "choices.encoder_ffn", "encoder_ffn"),
    (lambda d: d["choices"].pop("qkv_dim"), "choices.qkv_dim", "qkv_dim"),
    (lambda d: d["choices"].update(encoder_heads=[]), "choices.encoder_heads", "empty"),
    (lambda d: d["choices"].update(encoder_ffn_dim=[64, "big"]), "choices.encoder_ffn_dim", "'big'"),
    (lambda d: d["choices"].update(encoder_ffn_dim=[64, 1.5]), "choices.encoder_ffn_dim", "1.5"),
    (lambda d: d["choices"].update(decoder_layers=[True]), "choices.decoder_layers", "True"),
    (lambda d: d["choices"].update(encoder_layers=[0, 1]), "choices.encoder_layers", "0"),
    (lambda d: d["choices"].update(qkv_dim=32), "choices.qkv_dim", "32"),
    (lambda d: d["choices"].update(encoder_experts=[1, 2, 2]), "choices.encoder_experts", "[1, 2, 2]"),
    (lambda d: d.update(supernet={"encoder_ffn_dim": 48}), "choices.encoder_ffn_dim", "64"),
    (lambda d: d.update(supernet={"decoder_experts": 2}), "choices.decoder_experts", "3"),
    (lambda d: d.update(supernet={"vocab": 2}), "supernet.vocab", "vocab"),
    (lambda d: d.update(supernet={"qkv_dim": "32"}), "supernet.qkv_dim", "'32'"),
    (lambda d: d["choices"].update(encoder_top_k=[1, 4]), "choices.encoder_top_k", "4"),
    (lambda d: d["choices"].update(decoder_top_k=[2], decoder_experts=[1, 2]), "choices.decoder_top_k", "2"),
    (lambda d: d["choices"].update(decoder_cross_heads=[3]), "choices.decoder_cross_heads", "3"),
    (lambda d: d["choices"].update(qkv_dim=[32, 30]), "choices.encoder_heads", "30"),
    (lambda d: d["choices"].update(decoder_ende_attn=[1, 4]), "choices.decoder_ende_attn", "4"),
    (lambda d: d["choices"].update(decoder_ende_attn=[2]), "choices.decoder_ende_attn", "2"),
    (lambda d: d.update(heterogeneous_experts="yes"), "heterogeneous_experts", "'yes'"),
    (lambda d: d.update(name=7), "name", "7"),
    (lambda d: d.update(choices=[1, 2]), "choices", "[1, 2]"),
]


@pytest.mark.parametrize(("edit", "key", "value"), BAD_SPACES)
def test_bad_space_file_names_file_key_and_value(tmp_path, edit, key, value):
    path = _write(tmp_path, _mutated(edit))
    with pytest.raises(ValueError) as err:
        load_space(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and value in msg, msg


def test_bad_yaml_and_non_mapping_and_missing_and_unknown(tmp_path):
    with pytest.raises(ValueError, match="not valid YAML"):
        load_space(_write(tmp_path, "choices: [1, 2\n"))
    path = _write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ValueError, match=f"{path}.*mapping"):
        load_space(path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown search space 'nope'.*tiny"):
        load_space("nope")


# ---- membership ---------------------------------------------------------------------------
BAD_MEMBERS = [
    (lambda c: dataclasses.replace(c, encoder_embed_dim=16), "encoder_embed_dim", "16"),
    (lambda c: dataclasses.replace(c, qkv_dim=64), "qkv_dim", "64"),
    (lambda c: dataclasses.replace(c, encoder_heads=(8,)), "'encoder_heads'[0]", "8"),
    (lambda c: dataclasses.replace(c, decoder_cross_heads=(1,)), "'decoder_cross_heads'[0]", "1"),
    (lambda c: dataclasses.replace(c, encoder_expert_dims=((64, 48),), encoder_top_k=(1,)),
     "'encoder_expert_dims'[0][1]", "48"),
    (lambda c: dataclasses.replace(c, decoder_expert_dims=((32,) * 4,)), "'decoder_experts'[0]", "4"),
    (lambda c: dataclasses.replace(c, decoder_top_k=(2,)), "'decoder_top_k'[0]", "2"),
    (lambda c: dataclasses.replace(c, decoder_ende_attn=(2,)), "'decoder_ende_attn'[0]", "2"),
    (lambda c: dataclasses.replace(c, decoder_ende_attn=(1, 1)), "decoder_ende_attn", "2 entries"),
]


@pytest.mark.parametrize(("edit", "key", "value"), BAD_MEMBERS)
def test_config_outside_space_is_rejected_with_key_and_value(edit, key, value):
    space = load_space("tiny")
    config = edit(space.smallest())
    assert not space.contains(config)
    with pytest.raises(ValueError) as err:
        space.validate(config, source="my.json")
    msg = str(err.value)
    assert "my.json" in msg and key in msg and value in msg, msg


def test_too_many_layers_and_homogeneous_rule():
    space = load_space("hat_wmt14")
    assert space.contains(dense())
    with pytest.raises(ValueError, match="'encoder_layers' = 5"):
        space.validate(dense(enc=5))
    moe = load_space("automoe_wmt14")
    mixed = dataclasses.replace(dense(), encoder_expert_dims=((2048, 1024),) + ((2048,),) * 5)
    assert moe.contains(mixed)
    homo = dataclasses.replace(moe, heterogeneous_experts=False)
    with pytest.raises(ValueError, match=r"encoder_expert_dims'\[0\] = \[2048, 1024\].*share one dim"):
        homo.validate(mixed)
    assert homo.contains(dataclasses.replace(mixed, encoder_expert_dims=((1024, 1024),) + ((2048,),) * 5))


def test_ende_attn_must_not_exceed_encoder_depth():
    space = load_space("tiny")
    two = dataclasses.replace(space.largest(), decoder_ende_attn=(2, 1))
    assert space.contains(two)  # 2 encoder layers: attending to the last 2 is fine
    one_layer = space.smallest()  # 1 encoder layer
    assert not space.contains(dataclasses.replace(one_layer, decoder_ende_attn=(2,)))


# ---- features and baselines ---------------------------------------------------------------
def test_features_hand_computed():
    space = load_space("tiny")
    config = SubnetConfig(
        encoder_embed_dim=24, decoder_embed_dim=32, qkv_dim=32,
        encoder_expert_dims=((64, 32, 32),), encoder_heads=(4,), encoder_top_k=(2,),
        decoder_expert_dims=((32,), (64, 32)), decoder_heads=(2, 4), decoder_cross_heads=(4, 2),
        decoder_ende_attn=(1, 1), decoder_top_k=(1, 2),
    )
    f = dict(zip(space.feature_names(), space.features(config), strict=True))
    assert len(space.features(config)) == len(space.feature_names())
    hat = [f[n] for n in space.feature_names()[:10]]
    #   enc: embed, layers, mean ffn (mean of experts), heads; dec: embed, layers,
    #   mean ffn ((32 + 48) / 2), heads, cross heads, ende_attn
    assert hat == [24, 1, 128 / 3, 4, 32, 2, 40, 3, 3, 1]
    assert f["encoder_experts_mean"] == 3 and f["decoder_experts_mean"] == 1.5
    assert f["decoder_expert_ffn_mean"] == 128 / 3 and f["decoder_top_k_mean"] == 1.5
    assert (f["enc0_expert0_dim"], f["enc0_expert1_dim"], f["enc0_expert2_dim"]) == (64, 32, 32)
    assert f["enc0_ffn_routed"] == 2 * 128 / 3 and f["enc0_ffn_sum"] == 128
    assert f["dec0_expert1_dim"] == 0 and f["dec1_experts"] == 2 and f["dec1_cross_heads"] == 2
    # the inactive second encoder layer is all zeros
    assert all(v == 0 for n, v in f.items() if n.startswith("enc1_"))
    assert sum(n.startswith("enc1_") for n in f) == len([n for n in f if n.startswith("enc0_")])


def test_features_see_expert_order():
    space = load_space("tiny")
    a = dataclasses.replace(space.smallest(), encoder_expert_dims=((64, 32),))
    b = dataclasses.replace(space.smallest(), encoder_expert_dims=((32, 64),))
    assert a != b and space.features(a) != space.features(b)


def test_dense_baselines():
    hat = load_space("hat_wmt14").dense_baselines()
    assert hat["transformer-base"] == dense()
    assert "transformer-big" not in hat  # 1024 wide: outside every shipped space
    assert set(load_space("tiny").dense_baselines()) == {"largest", "largest-dense"}
    moe = load_space("automoe_wmt14")
    assert moe.dense_baselines()["largest-dense"].is_dense
    assert moe.dense_baselines()["largest"] == moe.largest()
    for config in moe.dense_baselines().values():
        moe.validate(config)


def test_importing_search_spaces_does_not_import_torch():
    code = (
        "import random, sys\n"
        "import search_spaces, search_spaces.importers\n"
        "s = search_spaces.load_space('demo')\n"
        "c = s.mutate(s.sample(random.Random(0)), 0.5, random.Random(1))\n"
        "s.features(c); s.size(); s.dense_baselines()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
