"""Per-side views: `SubnetConfig.side`/`with_side`/`from_sides`, `SearchSpace.side` and
`SupernetDims.side` agree with the flat fields, and the JSON and keys stay the same.

Oracles: the flat fields read by their written-out names (the naming convention
``<side>_<field>``, independent of the views' field tables), `dataclasses.replace` of the
flat fields, and the keys and space hashes stored in the committed results.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pickle
import random
from pathlib import Path

import pytest

from search_spaces import SearchSpace, SubnetConfig, available_spaces, load_space
from search_spaces.config import SIDES, SideConfig
from search_spaces.space import SideChoices, SupernetSide

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPACES = available_spaces()
# The shipped spaces give both sides the same choices; in this one every per-side choice
# and supernet size differs between the sides, so a view that reads the other side's
# field cannot pass.
ASYMMETRIC = {
    "name": "asymmetric",
    "heterogeneous_experts": True,
    "choices": {
        "encoder_embed_dim": [32, 24], "decoder_embed_dim": [40, 16], "qkv_dim": [32],
        "encoder_layers": [1, 2], "decoder_layers": [1, 3],
        "encoder_ffn_dim": [64, 32], "decoder_ffn_dim": [48, 16],
        "encoder_heads": [4, 2], "decoder_heads": [8, 1],
        "decoder_cross_heads": [16, 4], "decoder_ende_attn": [1, 2],
        "encoder_experts": [1, 2, 3], "decoder_experts": [1, 4],
        "encoder_top_k": [1, 2], "decoder_top_k": [1, 3],
        "expert_bits": [32, 8],
        "encoder_routing": ["token", "sentence"], "decoder_routing": ["token", "task"],
    },
}
SPACE_IDS = [*SPACES, "asymmetric"]


def _space(space_id: str) -> SearchSpace:
    if space_id == "asymmetric":
        return SearchSpace.from_dict(ASYMMETRIC, source="test_side_views")
    return load_space(space_id)
SIDE_FIELDS = [f.name for f in dataclasses.fields(SideConfig) if f.name != "name"]
CHOICE_FIELDS = [f.name for f in dataclasses.fields(SideChoices) if f.name != "name"]
SUPERNET_FIELDS = [f.name for f in dataclasses.fields(SupernetSide) if f.name != "name"]


def _configs(space_id: str, seed: int = 0, n: int = 40) -> list[SubnetConfig]:
    """Samples, mutants and children of one space from a seeded RNG (varied depths,
    expert counts, precisions and routings where the space has them)."""
    space = _space(space_id)
    rng = random.Random(seed)
    out = [space.sample(rng) for _ in range(n)]
    out += [space.mutate(c, 0.5, rng) for c in out[: n // 2]]
    out += [space.crossover(a, b, rng) for a, b in zip(out[: n // 2], out[n // 2: n], strict=True)]
    return out + [space.largest(), space.smallest()]


def _flat(obj: object, side: str, field: str) -> object:
    """The flat field by its written-out name, or None when the side has no such field."""
    return getattr(obj, f"{side}_{field}", None)


@pytest.mark.parametrize("space_id", SPACE_IDS)
def test_config_side_agrees_with_the_flat_fields(space_id):
    for config in _configs(space_id):
        assert config.sides() == (config.side("encoder"), config.side("decoder"))
        for side in SIDES:
            view = config.side(side)
            assert view.name == side
            for field in SIDE_FIELDS:
                flat = _flat(config, side, field)
                # only the decoder has cross-attention: the encoder's fields are empty
                assert getattr(view, field) == (() if flat is None else flat), (side, field)
            assert view.layers == _flat(config, side, "layers")
            assert view.experts == _flat(config, side, "experts")
            assert view.is_dense == all(n == 1 for n in view.experts)


def test_side_fields_cover_every_config_field_once():
    """Every flat field but qkv_dim belongs to exactly one side's view."""
    covered = [f"{side}_{field}" for side in SIDES for field in SIDE_FIELDS
               if f"{side}_{field}" in {f.name for f in dataclasses.fields(SubnetConfig)}]
    assert sorted(covered) == sorted(f.name for f in dataclasses.fields(SubnetConfig)
                                     if f.name != "qkv_dim")


@pytest.mark.parametrize("space_id", SPACE_IDS)
def test_with_side_equals_flat_replace_and_round_trips(space_id):
    configs = _configs(space_id, seed=1)
    for a, b in zip(configs, reversed(configs), strict=True):
        encoder, decoder = a.sides()
        assert SubnetConfig.from_sides(encoder, decoder, qkv_dim=a.qkv_dim) == a
        for side in SIDES:
            fields = [f for f in SIDE_FIELDS if _flat(a, side, f) is not None]
            # unchanged values give the same config, JSON and key
            same = a.with_side(side, **{f: getattr(a.side(side), f) for f in fields})
            assert same == a and same.to_json() == a.to_json() and same.key() == a.key()
            # another config's side: the flat `dataclasses.replace` of the same values
            theirs = {f: getattr(b.side(side), f) for f in fields}
            changed = a.with_side(side, **theirs)
            flat = dataclasses.replace(a, **{f"{side}_{f}": v for f, v in theirs.items()})
            assert changed == flat
            assert changed.to_json() == flat.to_json() and changed.key() == flat.key()
            assert changed.side(side) == b.side(side)
            other = "decoder" if side == "encoder" else "encoder"
            assert changed.side(other) == a.side(other)
            # a few fields only
            some = a.with_side(side, top_k=b.side(side).top_k, expert_dims=b.side(side).expert_dims)
            assert some == dataclasses.replace(a, **{f"{side}_top_k": _flat(b, side, "top_k"),
                                                     f"{side}_expert_dims":
                                                         _flat(b, side, "expert_dims")})


def test_with_side_and_from_sides_reject_what_a_side_does_not_have():
    config = load_space("tiny").largest()
    with pytest.raises(TypeError, match="cross_heads"):
        config.with_side("encoder", cross_heads=(4,))
    for name in ("layers", "experts", "name", "qkv_dim"):
        with pytest.raises(TypeError, match=name):
            config.with_side("decoder", **{name: 1})
    for bad in ("middle", "Encoder", "encoder_"):
        with pytest.raises(ValueError, match="side must be one of"):
            config.side(bad)
        with pytest.raises(ValueError, match="side must be one of"):
            config.with_side(bad, top_k=(1,))
    encoder, decoder = config.sides()
    with pytest.raises(ValueError, match="named 'decoder'"):
        SubnetConfig.from_sides(decoder, decoder, qkv_dim=config.qkv_dim)
    with pytest.raises(ValueError, match="no cross-attention"):
        SubnetConfig.from_sides(dataclasses.replace(encoder, cross_heads=decoder.cross_heads),
                                decoder, qkv_dim=config.qkv_dim)


def test_views_are_frozen_and_leave_the_config_unchanged():
    config = load_space("demo_task").largest()
    view = config.side("decoder")
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.top_k = (1,)  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config
    assert "side" not in json.dumps(config.to_dict())


def _committed_tables() -> list[Path]:
    out = []
    for path in sorted(RESULTS.rglob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if "key" in header and "config" in header:
            out.append(path)
    return out


def test_committed_keys_are_unchanged_through_the_views():
    """The subnet keys stored in results/ are identities: a stored config read back, and
    rebuilt from its side views, has the stored key and JSON."""
    csv.field_size_limit(1 << 30)
    tables = _committed_tables()
    assert tables, "no committed table with key and config columns"
    rows = 0
    for path in tables:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                config = SubnetConfig.from_json(row["config"], source=str(path))
                assert config.key() == row["key"], path
                assert config.to_dict() == json.loads(row["config"]), path
                rebuilt = SubnetConfig.from_sides(*config.sides(), qkv_dim=config.qkv_dim)
                assert rebuilt.key() == row["key"] and rebuilt.to_json() == config.to_json()
                rows += 1
    assert rows > 100


@pytest.mark.parametrize("space_id", SPACE_IDS)
def test_space_side_agrees_with_the_flat_fields(space_id):
    space = _space(space_id)
    before = json.dumps(space.to_dict(), sort_keys=True)
    assert space.sides() == (space.side("encoder"), space.side("decoder"))
    for side in SIDES:
        view = space.side(side)
        assert view.name == side
        for field in CHOICE_FIELDS:
            flat = _flat(space, side, field)
            assert getattr(view, field) == (() if flat is None else flat), (side, field)
        for n in range(1, max(view.experts) + 1):
            assert view.allowed_top_k(n) == tuple(k for k in _flat(space, side, "top_k")
                                                  if k <= n)
            assert space.allowed_top_k(side, n) == view.allowed_top_k(n)
        dims = space.supernet.side(side)
        assert dims.name == side
        for field in SUPERNET_FIELDS:
            assert getattr(dims, field) == _flat(space.supernet, side, field), (side, field)
    # the views are no part of the space's identity
    assert json.dumps(space.to_dict(), sort_keys=True) == before
    copy = pickle.loads(pickle.dumps(space))  # the cached views do not travel
    assert copy == space and set(vars(copy)) == {f.name for f in dataclasses.fields(space)}
    assert copy.sides() == space.sides()
    assert dataclasses.replace(space).side("decoder") == space.side("decoder")
    with pytest.raises(ValueError, match="side must be one of"):
        space.side("middle")
    with pytest.raises(ValueError, match="side must be one of"):
        space.supernet.side("middle")


def test_committed_space_hashes_are_unchanged():
    """The space identity stored in committed search.json files (sha256 of `to_dict`) of
    every shipped space, after its side views are built."""
    checked = 0
    for path in sorted(RESULTS.rglob("search.json")):
        stored = json.loads(path.read_text(encoding="utf-8")).get("space")
        if stored is None or stored["name"] not in SPACES:
            continue
        space = load_space(stored["name"])
        space.sides()
        blob = json.dumps(space.to_dict(), sort_keys=True).encode()
        assert hashlib.sha256(blob).hexdigest()[:16] == stored["sha256"], path
        checked += 1
    assert checked > 0
