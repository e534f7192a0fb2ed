"""`SubnetConfig`: one concrete architecture of a search space, as plain frozen data.

A config is canonical: per-layer tuples hold exactly one entry per *active* layer, so
genes of layers that a shallower subnet does not use cannot make two equal architectures
look different. Every FFN is a mixture of experts; a layer with one expert (and top-1) is a
dense FFN, exactly. Expert precision (``*_expert_bits``) defaults to 32 (full precision); a
config whose experts are all at 32 bits writes no bits keys, so its JSON and key are those
of the same architecture in files without them. The config is torch-free, hashable (usable
as a cache key), picklable (it travels to Ray workers) and round-trips through JSON exactly.

Code that treats both sides alike reads one side through `SubnetConfig.side` (a `SideConfig`:
``cfg.side("encoder").expert_dims``) and changes one with `SubnetConfig.with_side`, never
with attribute names built from strings; the flat fields stay the JSON's keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["SubnetConfig", "SideConfig", "SIDES", "FORMAT_VERSION", "FULL_PRECISION",
           "SUPPORTED_EXPERT_BITS", "ROUTINGS", "TOKEN"]

FORMAT_VERSION = 1
FULL_PRECISION = 32
# Weight-only expert precisions: int4 and int8 per output channel, and fp32.
SUPPORTED_EXPERT_BITS = (4, 8, 32)

_INT_FIELDS = ("encoder_embed_dim", "decoder_embed_dim", "qkv_dim")
_INT_TUPLE_FIELDS = (
    "encoder_heads",
    "encoder_top_k",
    "decoder_heads",
    "decoder_cross_heads",
    "decoder_ende_attn",
    "decoder_top_k",
)
_NESTED_FIELDS = ("encoder_expert_dims", "decoder_expert_dims")
_BITS_FIELDS = ("encoder_expert_bits", "decoder_expert_bits")
_ROUTING_FIELDS = ("encoder_routing", "decoder_routing")
# What an MoE layer's router reads (Kudugunta et al. 2021): each token's own state, its
# sentence (mean-pooled source states), or its task (the source's target-language tag).
TOKEN = "token"
ROUTINGS = (TOKEN, "sentence", "task")
SIDES = ("encoder", "decoder")


@dataclass(frozen=True)
class SideConfig:
    """One side of a `SubnetConfig` ("encoder" or "decoder"), its fields without the prefix.

    A view: `SubnetConfig.side` builds it, `SubnetConfig.with_side` and
    `SubnetConfig.from_sides` turn changed values back into a config. ``cross_heads`` and
    ``ende_attn`` are the decoder's; an encoder's are ``()``. The defaults of
    ``expert_bits`` and ``routing`` mean what the config's mean (full precision, token).
    """

    name: str
    embed_dim: int
    expert_dims: tuple[tuple[int, ...], ...]
    heads: tuple[int, ...]
    top_k: tuple[int, ...]
    expert_bits: tuple[tuple[int, ...], ...] = ()
    routing: str = TOKEN
    cross_heads: tuple[int, ...] = ()
    ende_attn: tuple[int, ...] = ()

    @property
    def layers(self) -> int:
        return len(self.expert_dims)

    @property
    def experts(self) -> tuple[int, ...]:
        """Number of experts per layer."""
        return tuple(len(d) for d in self.expert_dims)

    @property
    def is_dense(self) -> bool:
        """True when every layer has one expert (then nothing is routed)."""
        return all(len(d) == 1 for d in self.expert_dims)


# The one place that names each side's flat `SubnetConfig` field: `SideConfig` field ->
# `SubnetConfig` field. The encoder has no cross-attention, so no cross_heads/ende_attn.
_SIDE_FIELDS: dict[str, dict[str, str]] = {
    "encoder": {
        "embed_dim": "encoder_embed_dim",
        "expert_dims": "encoder_expert_dims",
        "heads": "encoder_heads",
        "top_k": "encoder_top_k",
        "expert_bits": "encoder_expert_bits",
        "routing": "encoder_routing",
    },
    "decoder": {
        "embed_dim": "decoder_embed_dim",
        "expert_dims": "decoder_expert_dims",
        "heads": "decoder_heads",
        "top_k": "decoder_top_k",
        "expert_bits": "decoder_expert_bits",
        "routing": "decoder_routing",
        "cross_heads": "decoder_cross_heads",
        "ende_attn": "decoder_ende_attn",
    },
}


def _side_fields(side: str) -> dict[str, str]:
    if side not in _SIDE_FIELDS:
        raise ValueError(f"side must be one of {list(SIDES)}, got {side!r}")
    return _SIDE_FIELDS[side]


@dataclass(frozen=True)
class SubnetConfig:
    """One architecture. Per-layer tuples have one entry per active layer.

    Attributes:
        encoder_embed_dim: model width of the encoder (a leading slice of the supernet's).
        decoder_embed_dim: model width of the decoder.
        qkv_dim: attention inner dim (Q/K/V projection width), shared by all attention
            modules; ``head_dim = qkv_dim // heads``.
        encoder_expert_dims: per encoder layer, the FFN hidden dim of each expert; the
            number of experts of layer i is ``len(encoder_expert_dims[i])``.
        encoder_heads: per encoder layer, self-attention heads.
        encoder_top_k: per encoder layer, experts routed per token (``<=`` its experts).
        decoder_expert_dims, decoder_heads, decoder_top_k: the same for the decoder.
        decoder_cross_heads: per decoder layer, encoder-decoder attention heads.
        decoder_ende_attn: per decoder layer, how many of the last encoder layers'
            outputs its cross-attention reads (1 = the last one, as in a plain
            Transformer; 2 or 3 concatenate the last 2 or 3 along time; HAT's
            "arbitrary encoder-decoder attention" -1/1/2).
        encoder_expert_bits, decoder_expert_bits: per layer, the weight precision of each
            expert (nested like ``*_expert_dims``): 32 is full precision, 8 and 4 are
            weight-only integers with one fp32 scale per output channel. The default
            ``()`` means every expert at 32 bits; so does any all-32 value whatever its
            shape (it is re-shaped to the dims), which keeps `dataclasses.replace` of
            the dims working on full-precision configs.
        encoder_routing, decoder_routing: what the routers of a side's MoE layers read
            (`ROUTINGS`): "token" (each token's hidden state, the default), "sentence"
            (the mean of the sentence's source states: in the encoder the layer's input,
            in the decoder the encoder's output) or "task" (the embedding of the source's
            first token, the target-language tag of multilingual data): then every token
            of a sentence (of a task) goes to the same experts. A side without an MoE
            layer has nothing to route and is "token"; "token" is not written to JSON, so
            token-routed configs keep their JSON and key.
    """

    encoder_embed_dim: int
    decoder_embed_dim: int
    qkv_dim: int
    encoder_expert_dims: tuple[tuple[int, ...], ...]
    encoder_heads: tuple[int, ...]
    encoder_top_k: tuple[int, ...]
    decoder_expert_dims: tuple[tuple[int, ...], ...]
    decoder_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_ende_attn: tuple[int, ...]
    decoder_top_k: tuple[int, ...]
    encoder_expert_bits: tuple[tuple[int, ...], ...] = ()
    decoder_expert_bits: tuple[tuple[int, ...], ...] = ()
    encoder_routing: str = TOKEN
    decoder_routing: str = TOKEN

    def __post_init__(self) -> None:
        # Canonical form: bits nested like the dims, so "full precision" has a single
        # representation; a side with one expert per layer routes nothing, so it is "token"
        # (one name for the architecture).
        object.__setattr__(self, "encoder_expert_bits",
                           _canonical_bits(self.encoder_expert_bits, self.encoder_expert_dims))
        object.__setattr__(self, "decoder_expert_bits",
                           _canonical_bits(self.decoder_expert_bits, self.decoder_expert_dims))
        if _unrouted(self.encoder_expert_dims):
            object.__setattr__(self, "encoder_routing", TOKEN)
        if _unrouted(self.decoder_expert_dims):
            object.__setattr__(self, "decoder_routing", TOKEN)

    # ---- per-side views --------------------------------------------------------------
    def side(self, name: str) -> SideConfig:
        """The ``name`` ("encoder"/"decoder") side's fields, unprefixed:
        ``cfg.side("decoder").top_k == cfg.decoder_top_k``."""
        fields = _side_fields(name)
        return SideConfig(name=name, **{view: getattr(self, flat) for view, flat in fields.items()})

    def sides(self) -> tuple[SideConfig, SideConfig]:
        """Both sides, encoder first."""
        return self.side("encoder"), self.side("decoder")

    def with_side(self, side: str, **changes: Any) -> SubnetConfig:
        """This config with fields of one side changed, named as in `SideConfig`:
        ``cfg.with_side("decoder", top_k=...)`` is ``dataclasses.replace(cfg,
        decoder_top_k=...)``. TypeError (like `dataclasses.replace`) for a name the side
        does not have (``name``, ``layers``, an encoder's ``cross_heads``)."""
        fields = _side_fields(side)
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"with_side: the {side} has no field(s) {unknown}; "
                            f"expected some of {list(fields)}")
        return dataclasses.replace(self, **{fields[k]: v for k, v in changes.items()})

    @classmethod
    def from_sides(cls, encoder: SideConfig, decoder: SideConfig, *, qkv_dim: int) -> SubnetConfig:
        """The config of two side views (``encoder.name == "encoder"``, ...); ValueError when
        a view is of the other side or the encoder has cross-attention fields."""
        kwargs: dict[str, Any] = {"qkv_dim": qkv_dim}
        for expected, view in (("encoder", encoder), ("decoder", decoder)):
            if view.name != expected:
                raise ValueError(f"from_sides: the {expected} view is named {view.name!r}")
            kwargs.update({flat: getattr(view, f) for f, flat in _side_fields(expected).items()})
        if encoder.cross_heads or encoder.ende_attn:
            raise ValueError(f"from_sides: the encoder has no cross-attention, got cross_heads "
                             f"{encoder.cross_heads} and ende_attn {encoder.ende_attn}")
        return cls(**kwargs)

    # ---- derived views ---------------------------------------------------------------
    @property
    def encoder_layers(self) -> int:
        return len(self.encoder_expert_dims)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder_expert_dims)

    @property
    def encoder_experts(self) -> tuple[int, ...]:
        """Number of experts per encoder layer."""
        return tuple(len(d) for d in self.encoder_expert_dims)

    @property
    def decoder_experts(self) -> tuple[int, ...]:
        """Number of experts per decoder layer."""
        return tuple(len(d) for d in self.decoder_expert_dims)

    @property
    def is_full_precision(self) -> bool:
        """True when every expert is at 32 bits (every config of a space without expert_bits)."""
        return _all_full(self.encoder_expert_bits) and _all_full(self.decoder_expert_bits)

    @property
    def is_dense(self) -> bool:
        """True when every layer has a single expert (a plain dense Transformer)."""
        return all(n == 1 for n in self.encoder_experts + self.decoder_experts)

    @property
    def task_routed(self) -> bool:
        """True when a side routes by task (then one task uses fixed experts)."""
        return "task" in (self.encoder_routing, self.decoder_routing)

    def route_dim(self, side: str) -> int:
        """The width a ``side`` ("encoder"/"decoder") router reads: the layer's own,
        except a sentence-routed decoder's (it pools the encoder's output)."""
        if side == "decoder" and self.decoder_routing == "sentence":
            return self.encoder_embed_dim
        return self.encoder_embed_dim if side == "encoder" else self.decoder_embed_dim

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists); the bits keys only when some expert
        is below 32 bits, so full-precision configs keep their old JSON and key."""
        skip = (_BITS_FIELDS if self.is_full_precision else ()) + tuple(
            name for name in _ROUTING_FIELDS if getattr(self, name) == TOKEN)
        return {
            f.name: _to_lists(getattr(self, f.name))
            for f in dataclasses.fields(self) if f.name not in skip
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> SubnetConfig:
        """Builds a config from `to_dict` output; raises ValueError naming bad keys."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names
                   if n not in data and n not in _BITS_FIELDS + _ROUTING_FIELDS]
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected {names}")
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        kwargs: dict[str, Any] = {}
        for name in _INT_FIELDS:
            kwargs[name] = _as_int(data[name], f"{source}: key '{name}'")
        for name in _INT_TUPLE_FIELDS:
            kwargs[name] = _as_int_tuple(data[name], f"{source}: key '{name}'")
        for name in _NESTED_FIELDS + _BITS_FIELDS:
            if name not in data:  # an optional bits key: full precision
                continue
            value = data[name]
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{source}: key '{name}' must be a list of lists, got {value!r}")
            kwargs[name] = tuple(
                _as_int_tuple(v, f"{source}: key '{name}'[{i}]") for i, v in enumerate(value)
            )
        for name in _ROUTING_FIELDS:
            if name in data:
                kwargs[name] = _as_routing(data[name], f"{source}: key '{name}'")
        for name in _BITS_FIELDS:  # checked before construction re-shapes an all-32 value
            if name in kwargs:
                _check_bits_shape(kwargs[name], kwargs[name.replace("bits", "dims")], name, source,
                                  strict=True)
        config = cls(**kwargs)
        config.check_shape(source=source)
        return config

    @classmethod
    def from_json(cls, text: str, *, source: str = "<json>") -> SubnetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=source)

    def key(self) -> str:
        """Stable content hash (16 hex chars): the same architecture gives the same key
        in every process and Python version (unlike ``hash()``, which is salted)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def check_shape(self, *, source: str = "SubnetConfig") -> None:
        """Checks internal consistency that needs no search space: per-layer tuples agree
        in length, every layer has >= 1 expert, top-k <= experts, heads divide qkv_dim."""
        enc, dec = self.encoder_layers, self.decoder_layers
        if enc < 1 or dec < 1:
            raise ValueError(f"{source}: needs >= 1 encoder and decoder layer, got {enc}/{dec}")
        for name, n in (
            ("encoder_heads", enc),
            ("encoder_top_k", enc),
            ("decoder_heads", dec),
            ("decoder_cross_heads", dec),
            ("decoder_ende_attn", dec),
            ("decoder_top_k", dec),
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{source}: key '{name}' has {len(getattr(self, name))} entries, "
                    f"expected one per active layer ({n})"
                )
        sides = self.sides()
        for side in sides:
            for i, (experts, k) in enumerate(zip(side.expert_dims, side.top_k, strict=True)):
                if len(experts) < 1:
                    raise ValueError(f"{source}: key '{side.name}_expert_dims'[{i}] has no expert")
                if not 1 <= k <= len(experts):
                    raise ValueError(
                        f"{source}: key '{side.name}_top_k'[{i}] = {k} must be in "
                        f"1..{len(experts)} (the layer's expert count)"
                    )
        for side in sides:
            _check_bits_shape(side.expert_bits, side.expert_dims, f"{side.name}_expert_bits",
                              source)
        for name in _ROUTING_FIELDS:
            _as_routing(getattr(self, name), f"{source}: key '{name}'")
        for name in ("encoder_heads", "decoder_heads", "decoder_cross_heads"):
            for i, h in enumerate(getattr(self, name)):
                if h < 1 or self.qkv_dim % h:
                    raise ValueError(
                        f"{source}: key '{name}'[{i}] = {h} does not divide qkv_dim {self.qkv_dim}"
                    )


def _all_full(bits: tuple[tuple[int, ...], ...]) -> bool:
    return all(b == FULL_PRECISION for layer in bits for b in layer)


def _canonical_bits(bits: tuple[tuple[int, ...], ...], dims: tuple[tuple[int, ...], ...]
                    ) -> tuple[tuple[int, ...], ...]:
    """All-32 bits of any shape re-shaped to the dims; other bits as nested tuples."""
    if _all_full(bits):
        return tuple((FULL_PRECISION,) * len(d) for d in dims)
    return tuple(tuple(layer) for layer in bits)


def _unrouted(dims: tuple[tuple[int, ...], ...]) -> bool:
    return all(len(d) == 1 for d in dims)


def _check_bits_shape(bits: tuple[tuple[int, ...], ...], dims: tuple[tuple[int, ...], ...],
                      name: str, source: str, *, strict: bool = False) -> None:
    """One precision per expert of every active layer, each a supported precision. Unless
    ``strict`` (a file's value), all-32 bits of any shape stand for full precision."""
    if _all_full(bits) and not strict:
        return
    if len(bits) != len(dims):
        raise ValueError(f"{source}: key '{name}' has {len(bits)} layers, expected one per "
                         f"active layer ({len(dims)})")
    for i, (layer, experts) in enumerate(zip(bits, dims, strict=True)):
        if len(layer) != len(experts):
            raise ValueError(f"{source}: key '{name}'[{i}] has {len(layer)} entries, expected "
                             f"one per expert ({len(experts)})")
        for j, b in enumerate(layer):
            if b not in SUPPORTED_EXPERT_BITS:
                raise ValueError(f"{source}: key '{name}'[{i}][{j}] = {b} is not a supported "
                                 f"precision {list(SUPPORTED_EXPERT_BITS)}")


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def _as_routing(value: Any, where: str) -> str:
    if value not in ROUTINGS:
        raise ValueError(f"{where}: expected one of {list(ROUTINGS)}, got {value!r}")
    return value


def _as_int_tuple(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list of integers, got {value!r}")
    return tuple(_as_int(v, where) for v in value)
