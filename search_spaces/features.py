"""Fixed-length numeric features of a subnet, for latency/cost predictors.

Three blocks, in this order:

1. HAT's 10 averaged features (``utils.get_config_features``): encoder embed dim, layers,
   mean FFN dim, mean self heads; decoder embed dim, layers, mean FFN dim, mean self heads,
   mean cross heads, mean ende_attn (already 1/2/3). A layer's FFN dim is the mean of its
   experts' dims (a dense layer: its dim).
2. AutoMoE's extras and global dims: per side the mean expert count, the mean dim over
   all experts of active layers, the mean top-k; and qkv_dim.
3. Per layer, padded with zeros to the deepest choice of the space: heads, experts, top-k,
   mean / max / summed expert dim, routed dim (top-k * mean dim: the expected FFN width a
   token passes through under balanced routing), each expert slot's dim (0 where the
   layer has fewer experts); decoder layers also cross heads and ende_attn.
4. Only in a space with more than one ``expert_bits`` choice (so other spaces keep their
   features): per side the mean expert precision in bits, then per layer each expert
   slot's bits (0 where the layer has fewer experts or is inactive).
5. Per side with more than one routing choice: 1.0 when the side routes by sentence, then
   1.0 when it routes by task (0.0 otherwise; token routing is 0, 0).

Values are raw (not normalised); predictors standardise them.
"""

from __future__ import annotations

from statistics import fmean
from typing import TYPE_CHECKING

from search_spaces.config import SideConfig, SubnetConfig

if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

__all__ = ["feature_names", "features"]

_SHORT = {"encoder": "enc", "decoder": "dec"}


def _layer_fields(side: str, slots: int) -> list[str]:
    fields = ["heads"]
    if side == "decoder":
        fields += ["cross_heads", "ende_attn"]
    fields += ["experts", "top_k", "ffn_mean", "ffn_max", "ffn_sum", "ffn_routed"]
    return fields + [f"expert{j}_dim" for j in range(slots)]


def feature_names(space: SearchSpace) -> list[str]:
    """Names of `features`, one per entry (stable for a given space)."""
    names = [
        "encoder_embed_dim", "encoder_layers", "encoder_ffn_mean", "encoder_heads_mean",
        "decoder_embed_dim", "decoder_layers", "decoder_ffn_mean", "decoder_heads_mean",
        "decoder_cross_heads_mean", "decoder_ende_attn_mean",
        "encoder_experts_mean", "encoder_expert_ffn_mean", "encoder_top_k_mean",
        "decoder_experts_mean", "decoder_expert_ffn_mean", "decoder_top_k_mean",
        "qkv_dim",
    ]
    for choices in space.sides():
        slots = max(choices.experts)
        for i in range(max(choices.layers)):
            names += [f"{_SHORT[choices.name]}{i}_{f}" for f in _layer_fields(choices.name, slots)]
    if len(space.expert_bits) > 1:
        names += ["encoder_expert_bits_mean", "decoder_expert_bits_mean"]
        for choices in space.sides():
            slots = max(choices.experts)
            names += [f"{_SHORT[choices.name]}{i}_expert{j}_bits"
                      for i in range(max(choices.layers)) for j in range(slots)]
    for side in _routed_sides(space):
        names += [f"{side}_routing_sentence", f"{side}_routing_task"]
    return names


def _routed_sides(space: SearchSpace) -> list[str]:
    return [choices.name for choices in space.sides() if len(choices.routing) > 1]


def _layer_values(side: SideConfig, slots: int, i: int) -> list[float]:
    dims = side.expert_dims[i]
    k = side.top_k[i]
    values: list[float] = [side.heads[i]]
    if side.name == "decoder":
        values += [side.cross_heads[i], side.ende_attn[i]]
    values += [len(dims), k, fmean(dims), max(dims), sum(dims), k * fmean(dims)]
    return [float(v) for v in values] + [float(d) for d in dims] + [0.0] * (slots - len(dims))


def features(space: SearchSpace, config: SubnetConfig) -> list[float]:
    """Feature vector of ``config`` (validated against ``space``), length
    ``len(feature_names(space))``."""
    space.validate(config, source="features")
    sides = config.sides()
    out: list[float] = []
    for side in sides:
        dims = side.expert_dims
        out += [side.embed_dim, len(dims), fmean(fmean(d) for d in dims), fmean(side.heads)]
        if side.name == "decoder":
            out += [fmean(side.cross_heads), fmean(side.ende_attn)]
    for side in sides:
        dims = side.expert_dims
        out += [fmean(len(d) for d in dims), fmean(x for d in dims for x in d), fmean(side.top_k)]
    out.append(config.qkv_dim)
    for side, choices in zip(sides, space.sides(), strict=True):
        slots = max(choices.experts)
        width = len(_layer_fields(side.name, slots))
        for i in range(max(choices.layers)):
            out += _layer_values(side, slots, i) if i < side.layers else [0.0] * width
    if len(space.expert_bits) > 1:
        out += [fmean(b for layer in side.expert_bits for b in layer) for side in sides]
        for side, choices in zip(sides, space.sides(), strict=True):
            slots = max(choices.experts)
            for i in range(max(choices.layers)):
                layer = side.expert_bits[i] if i < side.layers else ()
                out += [*layer, *[0] * (slots - len(layer))]
    for name in _routed_sides(space):
        routing = config.side(name).routing
        out += [routing == "sentence", routing == "task"]
    return [float(v) for v in out]
