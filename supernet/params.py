"""Parameter counts of a subnet, analytic (from its `SubnetConfig`).

Conventions:
- ``total``: every parameter the subnet owns: the shared embedding table [V, max(d_enc,
  d_dec)] (the output projection is tied to it, so it is counted once; positions are
  sinusoidal, no parameters), attention and layer norms (with biases), every expert of
  every layer, and the routers (a one-expert layer has no router).
- ``active``: the parameters one token uses: ``total`` minus, in every MoE layer, the
  experts it is not routed to. With experts of different sizes the experts a token uses
  vary, so this is the expectation under uniform routing: each expert is one of the
  token's top-k with probability ``k / n``, i.e. a layer contributes ``k/n * sum(expert
  params)``. Exact for dense and homogeneous layers. Hence a float.
- ``hat``: HAT's convention for reporting model size: ``total`` without the embedding table
  (and so without the tied output projection); routers are included (HAT's own counter
  missed them by accident, and counted inactive experts; we do neither).
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.config import SubnetConfig

__all__ = ["ParamCounts", "count_params"]


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one subnet (see the module docstring for the conventions).

    Attributes:
        total: all parameters.
        active: expected parameters used per token (uniform routing).
        hat: ``total`` excluding the embedding table / output projection.
        embedding: the embedding table's size (``total - hat``).
    """

    total: int
    active: float
    hat: int
    embedding: int


def _attention(q_in: int, kv_in: int, qkv: int, out: int) -> int:
    return qkv * q_in + qkv * kv_in * 2 + 3 * qkv + out * qkv + out


def _moe(d: int, dims: tuple[int, ...], top_k: int) -> tuple[int, float]:
    """(all parameters, expected active parameters) of one FFN layer."""
    experts = sum(2 * h * d + h + d for h in dims)
    router = d * len(dims) + len(dims) if len(dims) > 1 else 0
    return experts + router, router + experts * top_k / len(dims)


def count_params(config: SubnetConfig, vocab_size: int, *,
                 normalize_before: bool = False) -> ParamCounts:
    """Analytic parameter counts of ``config`` with a vocabulary of ``vocab_size``."""
    de, dd, q = config.encoder_embed_dim, config.decoder_embed_dim, config.qkv_dim
    embedding = vocab_size * max(de, dd)
    total, active = 0, 0.0
    for dims, k in zip(config.encoder_expert_dims, config.encoder_top_k, strict=True):
        dense = _attention(de, de, q, de) + 2 * (2 * de)  # self-attn, two layer norms
        moe_all, moe_active = _moe(de, dims, k)
        total += dense + moe_all
        active += dense + moe_active
    for dims, k in zip(config.decoder_expert_dims, config.decoder_top_k, strict=True):
        dense = _attention(dd, dd, q, dd) + _attention(dd, de, q, dd) + 3 * (2 * dd)
        moe_all, moe_active = _moe(dd, dims, k)
        total += dense + moe_all
        active += dense + moe_active
    if normalize_before:  # final layer norm of each stack
        total += 2 * de + 2 * dd
        active += 2 * de + 2 * dd
    return ParamCounts(total=total + embedding, active=active + embedding, hat=total,
                       embedding=embedding)
