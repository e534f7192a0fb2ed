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

Bytes (`weight_bytes`): every parameter at 4 bytes (fp32), except the two weight matrices of
an expert below 32 bits: a matrix [out, in] at ``b`` bits stores each output row packed,
``ceil(in·b/8)`` bytes, plus one fp32 scale per output channel (``4·out`` bytes). Expert
biases, attention, layer norms, routers and the embedding table stay fp32. The embedding
table is reported on its own (``embedding``), not in ``weights``.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.config import SubnetConfig

__all__ = ["ParamCounts", "WeightBytes", "count_params", "matrix_bytes", "weight_bytes"]

_FP32_BYTES = 4


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


def _moe(d: int, dims: tuple[int, ...], top_k: int, route_dim: int | None = None
         ) -> tuple[int, float]:
    """(all parameters, expected active parameters) of one FFN layer whose router reads
    width ``route_dim`` (default d)."""
    experts = sum(2 * h * d + h + d for h in dims)
    router = (route_dim or d) * len(dims) + len(dims) if len(dims) > 1 else 0
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
        moe_all, moe_active = _moe(dd, dims, k, config.route_dim("decoder"))
        total += dense + moe_all
        active += dense + moe_active
    if normalize_before:  # final layer norm of each stack
        total += 2 * de + 2 * dd
        active += 2 * de + 2 * dd
    return ParamCounts(total=total + embedding, active=active + embedding, hat=total,
                       embedding=embedding)


@dataclass(frozen=True)
class WeightBytes:
    """Storage of one subnet's parameters at their precision (see the module docstring).

    Attributes:
        weights: every parameter except the embedding table, in bytes.
        embedding: the embedding table (tied output projection), fp32, in bytes.
    """

    weights: int
    embedding: int


def matrix_bytes(out_features: int, in_features: int, bits: int) -> int:
    """Bytes of a weight matrix [out, in] at ``bits``: fp32 at 32, else each row packed
    (``ceil(in·bits/8)`` bytes) plus one fp32 scale per output channel."""
    if bits == 32:
        return _FP32_BYTES * out_features * in_features
    return out_features * (-(-in_features * bits // 8)) + _FP32_BYTES * out_features


def weight_bytes(config: SubnetConfig, vocab_size: int, *,
                 normalize_before: bool = False) -> WeightBytes:
    """Bytes of ``config``'s parameters at their precision (experts at
    ``*_expert_bits``, the rest fp32); with all experts at 32 bits, ``weights`` is exactly
    ``4 * count_params(...).hat``."""
    counts = count_params(config, vocab_size, normalize_before=normalize_before)
    total = _FP32_BYTES * counts.hat
    for side in config.sides():
        d = side.embed_dim
        for layer_dims, layer_bits in zip(side.expert_dims, side.expert_bits, strict=True):
            for h, b in zip(layer_dims, layer_bits, strict=True):
                # w1 [h, d] and w2 [d, h] replace their fp32 bytes
                total += matrix_bytes(h, d, b) + matrix_bytes(d, h, b) - 2 * _FP32_BYTES * h * d
    return WeightBytes(weights=total, embedding=_FP32_BYTES * counts.embedding)
