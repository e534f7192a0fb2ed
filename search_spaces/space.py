"""`SearchSpace`: the choices of every architecture dimension, loaded from YAML and
validated strictly.

A space file (``search_spaces/<name>.yaml``) looks like::

    name: tiny
    description: free text (optional)
    heterogeneous_experts: true        # experts of one layer may differ in size
    choices:                           # every key required, a non-empty list of ints
      encoder_embed_dim: [32, 24]
      ...
      expert_bits: [32, 8, 4]          # optional: expert weight precisions (absent: [32])
      decoder_routing: [token, task]   # optional: what routers read (absent: [token])
    supernet:                          # optional; each key defaults to its largest choice
      encoder_embed_dim: 32

Semantics (docs/search_space.md): a layer's top-k is one of ``*_top_k`` that is ``<=`` the
layer's expert count; a decoder layer's ``ende_attn`` is one of ``decoder_ende_attn`` that
is ``<=`` the encoder's layer count (reading more encoder layers than exist would make two
names for one architecture). Every choice that names a weight size must fit the supernet.

Per side, code reads ``space.side("encoder").experts`` (a `SideChoices`) and
``space.supernet.side("decoder").ffn_dim`` (a `SupernetSide`); the flat fields are the
file's keys.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_spaces import counting, operators
from search_spaces import features as _features
from search_spaces.config import (
    FULL_PRECISION,
    ROUTINGS,
    SIDES,
    SUPPORTED_EXPERT_BITS,
    TOKEN,
    SubnetConfig,
)

__all__ = [
    "CHOICE_KEYS",
    "OPTIONAL_CHOICE_KEYS",
    "BASELINES_DIR",
    "SPACES_DIR",
    "SearchSpace",
    "SideChoices",
    "SupernetDims",
    "SupernetSide",
    "check_precision_variant",
    "available_spaces",
    "load_space",
]

SPACES_DIR = Path(__file__).resolve().parent
BASELINES_DIR = SPACES_DIR / "baselines"

CHOICE_KEYS = (
    "encoder_embed_dim",
    "decoder_embed_dim",
    "qkv_dim",
    "encoder_layers",
    "decoder_layers",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "encoder_heads",
    "decoder_heads",
    "decoder_cross_heads",
    "decoder_ende_attn",
    "encoder_experts",
    "decoder_experts",
    "encoder_top_k",
    "decoder_top_k",
)
# Optional choice keys, with the value an absent key means. A space that leaves them out
# writes none of them back (`to_dict`), so its identity (the hash of `to_dict` that runs and
# checkpoints store) does not depend on the key's existence.
OPTIONAL_CHOICE_KEYS: dict[str, tuple] = {"expert_bits": (FULL_PRECISION,),
                                          "encoder_routing": (TOKEN,),
                                          "decoder_routing": (TOKEN,)}
_ROUTING_KEYS = ("encoder_routing", "decoder_routing")
_TOP_KEYS = ("name", "description", "heterogeneous_experts", "choices", "supernet")
_HEAD_KEYS = ("encoder_heads", "decoder_heads", "decoder_cross_heads")


@dataclass(frozen=True)
class SupernetSide:
    """One side of `SupernetDims`, its fields without the prefix (`SupernetDims.side`)."""

    name: str
    embed_dim: int
    layers: int
    ffn_dim: int
    experts: int


@dataclass(frozen=True)
class SideChoices:
    """One side's choices of a `SearchSpace`, its fields without the prefix
    (`SearchSpace.side`). ``cross_heads`` and ``ende_attn`` are the decoder's; an
    encoder's are ``()``."""

    name: str
    embed_dim: tuple[int, ...]
    layers: tuple[int, ...]
    ffn_dim: tuple[int, ...]
    heads: tuple[int, ...]
    experts: tuple[int, ...]
    top_k: tuple[int, ...]
    routing: tuple[str, ...]
    cross_heads: tuple[int, ...] = ()
    ende_attn: tuple[int, ...] = ()

    def allowed_top_k(self, experts: int) -> tuple[int, ...]:
        """Top-k choices of a layer with ``experts`` experts."""
        return tuple(k for k in self.top_k if k <= experts)


# The one place that names each side's flat fields: view field -> `SupernetDims` field and
# view field -> `SearchSpace` field.
_SUPERNET_SIDE_FIELDS: dict[str, dict[str, str]] = {
    "encoder": {"embed_dim": "encoder_embed_dim", "layers": "encoder_layers",
                "ffn_dim": "encoder_ffn_dim", "experts": "encoder_experts"},
    "decoder": {"embed_dim": "decoder_embed_dim", "layers": "decoder_layers",
                "ffn_dim": "decoder_ffn_dim", "experts": "decoder_experts"},
}
_SPACE_SIDE_FIELDS: dict[str, dict[str, str]] = {
    "encoder": {**_SUPERNET_SIDE_FIELDS["encoder"], "heads": "encoder_heads",
                "top_k": "encoder_top_k", "routing": "encoder_routing"},
    "decoder": {**_SUPERNET_SIDE_FIELDS["decoder"], "heads": "decoder_heads",
                "top_k": "decoder_top_k", "routing": "decoder_routing",
                "cross_heads": "decoder_cross_heads", "ende_attn": "decoder_ende_attn"},
}


def _fields_of(table: dict[str, dict[str, str]], side: str) -> dict[str, str]:
    if side not in table:
        raise ValueError(f"side must be one of {list(SIDES)}, got {side!r}")
    return table[side]


@dataclass(frozen=True)
class SupernetDims:
    """The supernet's maximal sizes: the weights it holds, which every subnet slices."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    qkv_dim: int
    encoder_layers: int
    decoder_layers: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    encoder_experts: int
    decoder_experts: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def side(self, name: str) -> SupernetSide:
        """The ``name`` ("encoder"/"decoder") side's sizes, unprefixed."""
        fields = _fields_of(_SUPERNET_SIDE_FIELDS, name)
        return SupernetSide(name=name,
                            **{view: getattr(self, flat) for view, flat in fields.items()})


@dataclass(frozen=True)
class SearchSpace:
    """All allowed choices (sorted ascending tuples) plus the supernet's sizes.

    Build one with `load_space` or `SearchSpace.from_dict`; the constructor checks the
    cross-field rules (choices fit the supernet, heads divide every qkv dim, top-k and
    ende_attn choices are reachable) and raises ValueError naming ``source`` and the key.
    """

    name: str
    source: str
    encoder_embed_dim: tuple[int, ...]
    decoder_embed_dim: tuple[int, ...]
    qkv_dim: tuple[int, ...]
    encoder_layers: tuple[int, ...]
    decoder_layers: tuple[int, ...]
    encoder_ffn_dim: tuple[int, ...]
    decoder_ffn_dim: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_ende_attn: tuple[int, ...]
    encoder_experts: tuple[int, ...]
    decoder_experts: tuple[int, ...]
    encoder_top_k: tuple[int, ...]
    decoder_top_k: tuple[int, ...]
    heterogeneous_experts: bool
    supernet: SupernetDims
    description: str = ""
    expert_bits: tuple[int, ...] = (FULL_PRECISION,)
    encoder_routing: tuple[str, ...] = (TOKEN,)
    decoder_routing: tuple[str, ...] = (TOKEN,)

    def __post_init__(self) -> None:
        _check_space(self)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>", name: str | None = None) -> SearchSpace:
        """Builds a space from the parsed YAML mapping; strict about keys and types.

        ``name`` is used when the mapping has no ``name`` key."""
        return _parse_space(data, source=source, default_name=name)

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (inverse of `from_dict`, ``source`` not included)."""
        return {
            "name": self.name,
            "description": self.description,
            "heterogeneous_experts": self.heterogeneous_experts,
            "choices": {k: list(getattr(self, k)) for k in self.choice_keys()},
            "supernet": self.supernet.to_dict(),
        }

    def choice_keys(self) -> tuple[str, ...]:
        """`CHOICE_KEYS` plus the optional keys this space sets to other than their default."""
        return CHOICE_KEYS + tuple(k for k, default in OPTIONAL_CHOICE_KEYS.items()
                                   if getattr(self, k) != default)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: `to_dict` plus ``source``, ``size`` (exact int),
        ``size_log10``, ``largest``/``smallest`` configs, ``num_features`` and the names of
        ``dense_baselines``."""
        size = self.size()
        out = self.to_dict()
        out.update(
            source=self.source, size=size, size_log10=round(math.log10(size), 3),
            largest=self.largest().to_dict(), smallest=self.smallest().to_dict(),
            num_features=len(self.feature_names()), baselines=sorted(self.dense_baselines()),
        )
        return out

    # ---- per-side views --------------------------------------------------------------
    def side(self, name: str) -> SideChoices:
        """The ``name`` ("encoder"/"decoder") side's choices, unprefixed:
        ``space.side("encoder").experts == space.encoder_experts``."""
        _fields_of(_SPACE_SIDE_FIELDS, name)  # ValueError for another name
        return self._side_views[name]

    @functools.cached_property
    def _side_views(self) -> dict[str, SideChoices]:
        # Built once per space (the genetic operators read a side per gene); not a field,
        # so equality, hashing, `to_dict` and pickles (`__getstate__`) never see it.
        return {
            side: SideChoices(name=side,
                              **{view: getattr(self, flat) for view, flat in fields.items()})
            for side, fields in _SPACE_SIDE_FIELDS.items()
        }

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_side_views"}

    def sides(self) -> tuple[SideChoices, SideChoices]:
        """Both sides, encoder first."""
        return self.side("encoder"), self.side("decoder")

    # ---- membership ------------------------------------------------------------------
    def allowed_top_k(self, side: str, experts: int) -> tuple[int, ...]:
        """Top-k choices of a ``side`` ("encoder"/"decoder") layer with ``experts`` experts."""
        return self.side(side).allowed_top_k(experts)

    def allowed_ende_attn(self, encoder_layers: int) -> tuple[int, ...]:
        """ende_attn choices when the encoder has ``encoder_layers`` layers."""
        return tuple(a for a in self.decoder_ende_attn if a <= encoder_layers)

    def validate(self, config: SubnetConfig, source: str | None = None) -> None:
        """Raises ValueError naming ``source``, the key, the value and the allowed choices
        when ``config`` is not a member of this space."""
        _check_member(self, config, source or f"subnet of space {self.name!r}")

    def contains(self, config: SubnetConfig) -> bool:
        try:
            self.validate(config)
        except ValueError:
            return False
        return True

    # ---- operators (all valid by construction; see operators.py) ----------------------
    def sample(self, rng: random.Random) -> SubnetConfig:
        """One random subnet: each gene uniform over its allowed choices (HAT's sampler)."""
        return operators.sample(self, rng)

    def sample_dense(self, rng: random.Random) -> SubnetConfig:
        """One random dense subnet (one expert per layer, every other gene uniform)."""
        return operators.sample_dense(self, rng)

    def mutate(self, config: SubnetConfig, prob: float, rng: random.Random) -> SubnetConfig:
        """Each gene of the full-depth genome is resampled with probability ``prob``."""
        return operators.mutate(self, config, prob, rng)

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: each gene from ``a`` or ``b`` with probability 1/2."""
        return operators.crossover(self, a, b, rng)

    def largest(self) -> SubnetConfig:
        """Every dimension at its largest choice (all experts at the largest FFN dim)."""
        return operators.extreme(self, largest=True)

    def smallest(self) -> SubnetConfig:
        """Every dimension at its smallest choice."""
        return operators.extreme(self, largest=False)

    # ---- counting, features, baselines -----------------------------------------------
    def size(self) -> int:
        """Exact number of distinct subnets (ordered per-expert dims; see counting.py)."""
        return counting.size(self)

    def feature_names(self) -> list[str]:
        """Names of `features`, fixed for this space."""
        return _features.feature_names(self)

    def features(self, config: SubnetConfig) -> list[float]:
        """Fixed-length predictor features (HAT's 10, AutoMoE's expert means, per-layer
        values padded with zeros to the deepest choice); see features.py."""
        return _features.features(self, config)

    def dense_baselines(self) -> dict[str, SubnetConfig]:
        """Named reference configs that are members of this space: always "largest";
        "largest-dense" (largest widths, one expert per layer) when 1 expert is a choice
        on both sides and that differs from "largest"; and every ``search_spaces/baselines/*.json`` that fits
        (e.g. "transformer-base")."""
        out = {"largest": self.largest()}
        if 1 in self.encoder_experts and 1 in self.decoder_experts:
            dense = operators.largest_dense(self)
            if dense != out["largest"]:
                out["largest-dense"] = dense
        for path in sorted(BASELINES_DIR.glob("*.json")):
            config = SubnetConfig.from_json(path.read_text(encoding="utf-8"), source=str(path))
            if self.contains(config):
                out[path.stem] = config
        return out


# ---- parsing ---------------------------------------------------------------------------
def _parse_space(data: Any, *, source: str, default_name: str | None) -> SearchSpace:
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; allowed keys are {list(_TOP_KEYS)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: key 'name' must be a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{source}: key 'description' must be a string, got {description!r}")
    hetero = data.get("heterogeneous_experts")
    if not isinstance(hetero, bool):
        raise ValueError(f"{source}: key 'heterogeneous_experts' must be true or false, got {hetero!r}")
    choices = data.get("choices")
    if not isinstance(choices, Mapping):
        raise ValueError(f"{source}: key 'choices' must be a mapping of the keys {list(CHOICE_KEYS)}, "
                         f"got {choices!r}")
    allowed = [*CHOICE_KEYS, *OPTIONAL_CHOICE_KEYS]
    unknown = sorted(set(map(str, choices)) - set(allowed))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {['choices.' + u for u in unknown]}; "
                         f"allowed keys are {allowed}")
    missing = [k for k in CHOICE_KEYS if k not in choices]
    if missing:
        raise ValueError(f"{source}: missing key(s) {['choices.' + m for m in missing]}")
    parsed: dict[str, Any] = {k: _choice_list(choices[k], f"{source}: key 'choices.{k}'",
                              limit=_LIMITS.get(k.split("_", 1)[-1], _MAX_CHOICE))
              for k in CHOICE_KEYS}
    for k, default in OPTIONAL_CHOICE_KEYS.items():
        read = _routing_list if k in _ROUTING_KEYS else _choice_list
        parsed[k] = default if k not in choices else read(choices[k], f"{source}: key 'choices.{k}'")

    dims_keys = [f.name for f in dataclasses.fields(SupernetDims)]
    given = data.get("supernet") or {}
    if not isinstance(given, Mapping):
        raise ValueError(f"{source}: key 'supernet' must be a mapping, got {given!r}")
    unknown = sorted(set(map(str, given)) - set(dims_keys))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {['supernet.' + u for u in unknown]}; "
                         f"allowed keys are {dims_keys}")
    dims = {}
    for k in dims_keys:
        if k in given:
            v = given[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{source}: key 'supernet.{k}' must be a positive integer, got {v!r}")
            dims[k] = v
        else:
            dims[k] = max(parsed[k])
    return SearchSpace(
        name=name, source=source, description=description, heterogeneous_experts=hetero,
        supernet=SupernetDims(**dims), **parsed,
    )


# Sanity bounds: far above any Transformer trained today, low enough that a typo
# (encoder_layers: [1, 100000]) fails here instead of deep in counting or allocation.
_MAX_CHOICE = 1 << 20  # widths, FFN dims
_LIMITS = {"layers": 256, "heads": 1024, "cross_heads": 1024, "experts": 4096, "top_k": 4096, "ende_attn": 256}


def _choice_list(value: Any, where: str, *, limit: int = _MAX_CHOICE) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a non-empty list of positive integers (one choice "
                         f"is written [x]), got {value!r}")
    if not value:
        raise ValueError(f"{where}: the choice list is empty; expected at least one positive integer")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: choice {v!r} is not a positive integer")
        if v > limit:
            raise ValueError(f"{where}: choice {v} is above the supported maximum {limit}")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}: duplicate choice in {list(value)}")
    return tuple(sorted(value))


def _routing_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where}: expected a non-empty list of {list(ROUTINGS)}, got {value!r}")
    bad = [v for v in value if v not in ROUTINGS]
    if bad:
        raise ValueError(f"{where}: {bad[0]!r} is not a routing; expected some of {list(ROUTINGS)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}: duplicate choice in {list(value)}")
    return tuple(sorted(value))


def _check_space(s: SearchSpace) -> None:
    """Cross-field rules; raises ValueError naming the file, key and value."""
    src = s.source
    for k in s.choice_keys():
        vals = getattr(s, k)
        if not isinstance(vals, tuple) or not vals or list(vals) != sorted(set(vals)):
            raise ValueError(f"{src}: key 'choices.{k}' must be a non-empty sorted tuple of "
                             f"distinct {'routings' if k in _ROUTING_KEYS else 'integers'}, "
                             f"got {vals!r}")
    for k in _ROUTING_KEYS:
        bad = [v for v in getattr(s, k) if v not in ROUTINGS]
        if bad:
            raise ValueError(f"{src}: key 'choices.{k}': {bad[0]!r} is not one of {list(ROUTINGS)}")
    for k in (f.name for f in dataclasses.fields(SupernetDims)):
        cap = getattr(s.supernet, k)
        too_big = [v for v in getattr(s, k) if v > cap]
        if too_big:
            raise ValueError(f"{src}: key 'choices.{k}': choice {too_big[0]} is larger than the "
                             f"supernet's maximum supernet.{k} = {cap}")
    for k in _HEAD_KEYS:
        for h in getattr(s, k):
            for q in s.qkv_dim:
                if q % h:
                    raise ValueError(f"{src}: key 'choices.{k}': head count {h} does not divide "
                                     f"qkv_dim {q} (choices.qkv_dim)")
    bad = [a for a in s.decoder_ende_attn if a not in (1, 2, 3)]
    if bad:
        raise ValueError(f"{src}: key 'choices.decoder_ende_attn': value {bad[0]} is not one of "
                         f"1, 2, 3 (the number of last encoder layers attended; HAT's -1/1/2)")
    if s.decoder_ende_attn[0] > s.encoder_layers[0]:
        raise ValueError(f"{src}: key 'choices.decoder_ende_attn': smallest value "
                         f"{s.decoder_ende_attn[0]} exceeds the smallest encoder layer count "
                         f"{s.encoder_layers[0]}, so a shallow encoder has no valid choice")
    for side in s.sides():
        top_k, experts = side.top_k, side.experts
        if top_k[-1] > experts[-1]:
            raise ValueError(f"{src}: key 'choices.{side.name}_top_k': top-k {top_k[-1]} is above "
                             f"the largest expert count {experts[-1]} "
                             f"(choices.{side.name}_experts)")
        if top_k[0] > experts[0]:
            raise ValueError(f"{src}: key 'choices.{side.name}_top_k': smallest top-k {top_k[0]} "
                             f"is above the smallest expert count {experts[0]}, so a layer with "
                             f"{experts[0]} expert(s) has no valid top-k")
    bad = [b for b in s.expert_bits if b not in SUPPORTED_EXPERT_BITS]
    if bad:
        raise ValueError(f"{src}: key 'choices.expert_bits': value {bad[0]} is not a supported "
                         f"expert precision {list(SUPPORTED_EXPERT_BITS)} (bits per weight)")
    if not isinstance(s.heterogeneous_experts, bool):
        raise ValueError(f"{src}: key 'heterogeneous_experts' must be a bool, got "
                         f"{s.heterogeneous_experts!r}")


def _check_member(s: SearchSpace, c: SubnetConfig, src: str) -> None:
    if not isinstance(c, SubnetConfig):
        raise ValueError(f"{src}: expected a SubnetConfig, got {type(c).__name__}")
    c.check_shape(source=src)

    def need(key: str, value: int, allowed: tuple[int, ...], why: str = "") -> None:
        if value not in allowed:
            name, _, index = key.partition("[")  # 'name'[i][j], as SubnetConfig.check_shape
            raise ValueError(f"{src}: key '{name}'{'[' + index if index else ''} = {value} is "
                             f"not in space {s.name!r}: allowed {list(allowed)}{why}")

    need("encoder_embed_dim", c.encoder_embed_dim, s.encoder_embed_dim)
    need("decoder_embed_dim", c.decoder_embed_dim, s.decoder_embed_dim)
    need("qkv_dim", c.qkv_dim, s.qkv_dim)
    need("encoder_layers", c.encoder_layers, s.encoder_layers)
    need("decoder_layers", c.decoder_layers, s.decoder_layers)
    for side, choices in zip(c.sides(), s.sides(), strict=True):
        for i, experts in enumerate(side.expert_dims):
            n = len(experts)
            need(f"{side.name}_experts[{i}]", n, choices.experts)
            for j, d in enumerate(experts):
                need(f"{side.name}_expert_dims[{i}][{j}]", d, choices.ffn_dim)
            if not s.heterogeneous_experts and len(set(experts)) > 1:
                raise ValueError(f"{src}: key '{side.name}_expert_dims'[{i}] = {list(experts)}: "
                                 f"space {s.name!r} has heterogeneous_experts false, so all "
                                 f"experts of a layer must share one dim")
            bits = side.expert_bits[i]
            for j, b in enumerate(bits):
                need(f"{side.name}_expert_bits[{i}][{j}]", b, s.expert_bits,
                     " (choices.expert_bits)")
            if not s.heterogeneous_experts and len(set(bits)) > 1:
                raise ValueError(f"{src}: key '{side.name}_expert_bits'[{i}] = {list(bits)}: "
                                 f"space {s.name!r} has heterogeneous_experts false, so all "
                                 f"experts of a layer must share one precision")
            need(f"{side.name}_top_k[{i}]", side.top_k[i], choices.allowed_top_k(n),
                 f" for a layer with {n} experts")
        for i, h in enumerate(side.heads):
            need(f"{side.name}_heads[{i}]", h, choices.heads)
        if not side.is_dense and side.routing not in choices.routing:
            raise ValueError(f"{src}: key '{side.name}_routing' = {side.routing!r} is not in "
                             f"space {s.name!r}: allowed {list(choices.routing)}")
    for i, h in enumerate(c.decoder_cross_heads):
        need(f"decoder_cross_heads[{i}]", h, s.decoder_cross_heads)
    for i, a in enumerate(c.decoder_ende_attn):
        need(f"decoder_ende_attn[{i}]", a, s.allowed_ende_attn(c.encoder_layers),
             f" with {c.encoder_layers} encoder layer(s)")


def check_precision_variant(base: SearchSpace, variant: SearchSpace, *, source: str) -> None:
    """ValueError unless ``variant`` differs from ``base`` (the space a supernet was trained
    on) only in ``expert_bits``: then its subnets are the same slices of the same weights,
    and the precision only chooses how an expert is quantized when it is scored. The error
    names the first key that differs and both values."""
    a, b = base.to_dict(), variant.to_dict()
    for d in (a, b):
        d["choices"].pop("expert_bits", None)
    for section in ("choices", "supernet"):
        for key in sorted(set(a[section]) | set(b[section])):
            if a[section].get(key) != b[section].get(key):
                raise ValueError(f"{source}: space {variant.name!r} differs from the supernet's "
                                 f"space {base.name!r} in '{section}.{key}' "
                                 f"({b[section].get(key)} vs {a[section].get(key)}); only "
                                 "'choices.expert_bits' may differ")
    if a["heterogeneous_experts"] != b["heterogeneous_experts"]:
        raise ValueError(f"{source}: space {variant.name!r} differs from the supernet's space "
                         f"{base.name!r} in 'heterogeneous_experts'; only "
                         "'choices.expert_bits' may differ")


# ---- loading ---------------------------------------------------------------------------
def available_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Loads a shipped space by name (``"tiny"``) or any YAML file by path.

    Raises FileNotFoundError for a missing path, ValueError for an unknown name or a
    malformed file (naming the file, key and value)."""
    text = str(name_or_path)
    looks_like_path = (
        isinstance(name_or_path, Path) or "/" in text or "\\" in text
        or text.endswith((".yaml", ".yml"))
    )
    if looks_like_path:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"search space file not found: {path}")
    else:
        path = SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown search space {text!r}; shipped spaces: "
                             f"{available_spaces()} (or give a path to a .yaml file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (a binary file?)") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    return SearchSpace.from_dict(data, source=str(path), name=path.stem)
