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

from search_spaces.config import SubnetConfig

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
    for side in ("encoder", "decoder"):
        slots = max(getattr(space, f"{side}_experts"))
        for i in range(max(getattr(space, f"{side}_layers"))):
            names += [f"{_SHORT[side]}{i}_{f}" for f in _layer_fields(side, slots)]
    if len(space.expert_bits) > 1:
        names += ["encoder_expert_bits_mean", "decoder_expert_bits_mean"]
        for side in ("encoder", "decoder"):
            slots = max(getattr(space, f"{side}_experts"))
            names += [f"{_SHORT[side]}{i}_expert{j}_bits"
                      for i in range(max(getattr(space, f"{side}_layers"))) for j in range(slots)]
    for side in _routed_sides(space):
        names += [f"{side}_routing_sentence", f"{side}_routing_task"]
    return names


def _routed_sides(space: SearchSpace) -> list[str]:
    return [side for side in ("encoder", "decoder") if len(getattr(space, f"{side}_routing")) > 1]


def _layer_values(side: str, slots: int, c: SubnetConfig, i: int) -> list[float]:
    dims = getattr(c, f"{side}_expert_dims")[i]
    k = getattr(c, f"{side}_top_k")[i]
    values = [getattr(c, f"{side}_heads")[i]]
    if side == "decoder":
        values += [c.decoder_cross_heads[i], c.decoder_ende_attn[i]]
    values += [len(dims), k, fmean(dims), max(dims), sum(dims), k * fmean(dims)]
    return [float(v) for v in values] + [float(d) for d in dims] + [0.0] * (slots - len(dims))


def features(space: SearchSpace, config: SubnetConfig) -> list[float]:
    """Feature vector of ``config`` (validated against ``space``), length
    ``len(feature_names(space))``."""
    space.validate(config, source="features")
    c = config
    out: list[float] = []
    for side in ("encoder", "decoder"):
        dims = getattr(c, f"{side}_expert_dims")
        out += [
            getattr(c, f"{side}_embed_dim"), len(dims), fmean(fmean(d) for d in dims),
            fmean(getattr(c, f"{side}_heads")),
        ]
        if side == "decoder":
            out += [fmean(c.decoder_cross_heads), fmean(c.decoder_ende_attn)]
    for side in ("encoder", "decoder"):
        dims = getattr(c, f"{side}_expert_dims")
        out += [fmean(len(d) for d in dims), fmean(x for d in dims for x in d),
                fmean(getattr(c, f"{side}_top_k"))]
    out.append(c.qkv_dim)
    for side in ("encoder", "decoder"):
        slots = max(getattr(space, f"{side}_experts"))
        width = len(_layer_fields(side, slots))
        active = len(getattr(c, f"{side}_expert_dims"))
        for i in range(max(getattr(space, f"{side}_layers"))):
            out += _layer_values(side, slots, c, i) if i < active else [0.0] * width
    if len(space.expert_bits) > 1:
        out += [fmean(b for layer in getattr(c, f"{side}_expert_bits") for b in layer)
                for side in ("encoder", "decoder")]
        for side in ("encoder", "decoder"):
            slots = max(getattr(space, f"{side}_experts"))
            bits = getattr(c, f"{side}_expert_bits")
            for i in range(max(getattr(space, f"{side}_layers"))):
                layer = bits[i] if i < len(bits) else ()
                out += [*layer, *[0] * (slots - len(layer))]
    for side in _routed_sides(space):
        routing = getattr(c, f"{side}_routing")
        out += [routing == "sentence", routing == "task"]
    return [float(v) for v in out]
