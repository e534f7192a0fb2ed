"""`size`: the exact number of distinct subnets of a space, by a closed formula.

Distinct means a different architecture: a canonical `SubnetConfig` holds only active
layers, so genes of inactive layers never count. Experts are distinct weight slices
(expert j of a layer is the supernet's j-th expert), so per-expert dims are an ordered
tuple: (1024, 2048) and (2048, 1024) are two subnets.

For one layer with ``F`` FFN choices and ``B`` expert precisions (``expert_bits``; 1 when
the space leaves it out), an expert has ``F·B`` settings and the number of (experts, top-k,
dims, bits) settings is
``sum over n in experts of |{k in top_k : k <= n}| * ((F·B)**n if heterogeneous else F·B)``;
times the head choices (and for a decoder layer the cross-attention heads and the
ende_attn choices ``<=`` the encoder depth). Layers are independent given the depths, so

    size = |enc embed| * |dec embed| * |qkv|
           * sum over Le of [ E**Le * sum over Ld of D(Le)**Ld ].

With ``R`` routing choices on a side, every stack of that side that has at least one MoE
layer comes in ``R`` versions (an all-dense stack routes nothing): ``E**Le`` becomes
``R·(E**Le - Ed**Le) + Ed**Le`` with ``Ed`` the settings of a one-expert layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

__all__ = ["size", "layer_settings"]


def layer_settings(space: SearchSpace, side: str, encoder_layers: int | None = None, *,
                   dense_only: bool = False) -> int:
    """Distinct settings of one ``side`` layer (a decoder layer needs the encoder depth);
    with ``dense_only`` those with one expert only."""
    choices = space.side(side)
    per_expert = len(choices.ffn_dim) * len(space.expert_bits)
    ffn = sum(
        len(choices.allowed_top_k(n))
        * (per_expert**n if space.heterogeneous_experts else per_expert)
        for n in choices.experts if n == 1 or not dense_only
    )
    total = len(choices.heads) * ffn
    if side == "decoder":
        if encoder_layers is None:
            raise ValueError("layer_settings: a decoder layer needs encoder_layers")
        total *= len(space.decoder_cross_heads) * len(space.allowed_ende_attn(encoder_layers))
    return total


def size(space: SearchSpace) -> int:
    """Exact number of distinct subnets (a Python int; it can be astronomically large)."""
    def stacks(side: str, depth: int, encoder_layers: int | None = None) -> int:
        every = layer_settings(space, side, encoder_layers) ** depth
        dense = layer_settings(space, side, encoder_layers, dense_only=True) ** depth
        return len(space.side(side).routing) * (every - dense) + dense

    depth_sum = 0
    for le in space.encoder_layers:
        depth_sum += stacks("encoder", le) * sum(stacks("decoder", ld, le)
                                                 for ld in space.decoder_layers)
    return (
        len(space.encoder_embed_dim) * len(space.decoder_embed_dim) * len(space.qkv_dim) * depth_sum
    )
