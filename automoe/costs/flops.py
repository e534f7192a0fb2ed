"""Analytic FLOPs of a subnet, from its `SubnetConfig` alone (no model, no torch).

Convention: FLOPs = 2 × multiply-adds (MACs). We count the matrix products the model runs and
nothing else, exactly like fvcore's ``linear``/``matmul`` handles and
``torch.utils.flop_counter``: layer norms, softmax, activations, residual adds, masking,
dropout and routing bookkeeping (top-k, gather/scatter) are excluded; biases are excluded.
Embedding lookups are excluded (they are gathers); the output projection is excluded unless
the protocol asks for it (it then needs the vocab size). This is the HAT/AutoMoE protocol
(batch 1, 30 source and 30 teacher-forced target tokens, one forward pass), so our numbers are
comparable with the FLOPs in their papers.

Per layer, with ``d`` the layer's width, ``q`` the qkv dim, ``S``/``T`` source/target lengths:

- encoder self-attention: Q, K, V, O projections ``4·S·d·q``; scores ``Q Kᵀ`` and
  ``softmax · V`` ``2·S·S·q`` (summed over heads: heads never change FLOPs, only head_dim);
- decoder self-attention: the same with ``T`` (teacher forcing attends over all ``T``
  positions; the causal mask is not discounted because the full product is computed);
- decoder cross-attention reading the last ``a`` encoder layers concatenated along time
  (HAT's arbitrary encoder-decoder attention): Q and O ``2·T·d_dec·q``, K and V of the
  ``a·S`` encoder positions ``2·a·S·d_enc·q``, scores and values ``2·T·a·S·q``;
- MoE FFN: a token runs its top-k experts, an expert of hidden size ``h`` costs ``2·d·h``;
  with experts of different sizes the count is an expectation: under uniform routing every
  expert is one of a token's ``k`` with probability ``k/n``; under observed routing the
  expert shares come from routing counts; the router costs ``d·n`` per token when ``n > 1``
  (a one-expert layer is a plain dense FFN with no router), once per sentence for a
  sentence- or task-routed layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from search_spaces.checks import check_ints
from search_spaces.config import SubnetConfig

__all__ = [
    "FLOPS_COMPONENTS",
    "FlopsProtocol",
    "FlopsReport",
    "RoutingCounts",
    "flops",
    "expert_macs_per_token",
    "cross_attention_span",
]


# The per-layer components a FLOPs report splits into (in this order); the report adds
# ``output_projection``, and the latency features use these as they are.
FLOPS_COMPONENTS = (
    "encoder_self_attention",
    "encoder_ffn",
    "encoder_router",
    "decoder_self_attention",
    "decoder_cross_attention",
    "decoder_ffn",
    "decoder_router",
)


@dataclass(frozen=True)
class FlopsProtocol:
    """What input the FLOPs are counted for (defaults: HAT/AutoMoE on WMT).

    Attributes:
        src_len: source tokens per sentence (HAT: 30 for WMT, 23 for IWSLT).
        tgt_len: teacher-forced target tokens per sentence (decoder input length).
        batch: sentences; every count scales linearly with it.
        include_output_projection: add the ``T·d_dec·V`` MACs of the vocabulary projection.
        vocab_size: needed (and only used) when the output projection is included.
    """

    src_len: int = 30
    tgt_len: int = 30
    batch: int = 1
    include_output_projection: bool = False
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        check_ints("FlopsProtocol", self, {"src_len": 1, "tgt_len": 1, "batch": 1})
        if self.include_output_projection and (self.vocab_size is None or self.vocab_size < 1):
            raise ValueError(
                "FlopsProtocol: include_output_projection needs vocab_size >= 1, "
                f"got {self.vocab_size!r}"
            )

    def describe(self) -> str:
        """One line that goes next to every reported FLOPs number."""
        out = (
            f"incl. output projection (vocab {self.vocab_size})"
            if self.include_output_projection
            else "excl. embeddings and output projection"
        )
        return (
            f"FLOPs = 2×MACs of matmuls, batch {self.batch}, {self.src_len} source + "
            f"{self.tgt_len} teacher-forced target tokens, one forward pass, {out}"
        )

    def to_dict(self) -> dict:
        return {
            "src_len": self.src_len,
            "tgt_len": self.tgt_len,
            "batch": self.batch,
            "include_output_projection": self.include_output_projection,
            "vocab_size": self.vocab_size,
            "convention": "flops = 2 * macs; matmuls only",
        }


@dataclass(frozen=True)
class RoutingCounts:
    """Observed routing: per layer, how many (token, slot) assignments each expert got.

    ``encoder[i][e]`` counts the tokens that encoder layer ``i`` routed to expert ``e``
    (a token with top-k counts once for each of its k experts). Only the shares matter:
    the expected FLOPs of the protocol's tokens use ``counts / sum(counts)``, so counts
    gathered on real dev sentences of any length apply; counts gathered on the protocol's
    own input reproduce exactly what the model computed on it.
    """

    encoder: tuple[tuple[int, ...], ...]
    decoder: tuple[tuple[int, ...], ...]

    def check(self, config: SubnetConfig) -> None:
        for side, counts in (("encoder", self.encoder), ("decoder", self.decoder)):
            experts = config.side(side).experts
            if len(counts) != len(experts):
                raise ValueError(
                    f"RoutingCounts.{side}: {len(counts)} layers, the config has {len(experts)}"
                )
            for i, (c, n) in enumerate(zip(counts, experts, strict=True)):
                if len(c) != n or any(x < 0 for x in c) or sum(c) == 0:
                    raise ValueError(
                        f"RoutingCounts.{side}[{i}] = {list(c)}: expected {n} non-negative "
                        "counts with a positive sum"
                    )


@dataclass(frozen=True)
class FlopsReport:
    """FLOPs of one subnet under one protocol, with a per-component breakdown (in MACs).

    ``macs`` is the headline number (an expectation when heterogeneous experts make it
    depend on routing, hence a float); ``macs_min``/``macs_max`` bound it by routing every
    token to the smallest/largest top-k experts of each layer.
    """

    macs: float
    macs_min: float
    macs_max: float
    breakdown: dict[str, float]
    routing: str  # "uniform" or "observed"
    protocol: FlopsProtocol = field(default_factory=FlopsProtocol)

    @property
    def flops(self) -> float:
        return 2.0 * self.macs

    def to_dict(self) -> dict:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "macs_min": self.macs_min,
            "macs_max": self.macs_max,
            "routing": self.routing,
            "breakdown_macs": dict(self.breakdown),
            "protocol": self.protocol.describe(),
        }


def cross_attention_span(config: SubnetConfig, layer: int) -> int:
    """How many encoder layers' outputs decoder layer ``layer`` attends to (clipped to the
    encoder depth, as the model does)."""
    return min(config.decoder_ende_attn[layer], config.encoder_layers)


def expert_macs_per_token(
    dims: Sequence[int], top_k: int, width: int, shares: Sequence[float] | None = None
) -> tuple[float, float, float]:
    """Expected, min and max expert MACs of one token in one MoE layer.

    Args:
        dims: hidden size of each expert.
        top_k: experts per token.
        width: the layer's model dim ``d``; an expert of hidden ``h`` costs ``2·d·h``.
        shares: fraction of routed slots each expert received (sums to 1); None = uniform.
    """
    cost = [2 * width * h for h in dims]
    if shares is None:
        expected = top_k * sum(cost) / len(cost)
    else:
        expected = top_k * sum(s * c for s, c in zip(shares, cost, strict=True))
    ordered = sorted(cost)
    return expected, float(sum(ordered[:top_k])), float(sum(ordered[-top_k:]))


def _attention(n_q: int, n_kv: int, d_q: int, d_kv: int, qkv: int) -> float:
    # Q and O projections on the queries, K and V on the keys, scores + weighted values.
    return n_q * d_q * qkv * 2 + n_kv * d_kv * qkv * 2 + 2 * n_q * n_kv * qkv


def _moe(
    tokens: int,
    width: int,
    dims: Sequence[int],
    top_k: int,
    counts: Sequence[int] | None,
    routing: str = "token",
    route_dim: int | None = None,
) -> tuple[float, float, float, float]:
    """(expected, min, max) expert MACs and router MACs of one layer for ``tokens`` (a
    sentence- or task-routed router runs once per sentence, on ``route_dim``)."""
    shares = None if counts is None else [c / sum(counts) for c in counts]
    exp, lo, hi = expert_macs_per_token(dims, top_k, width, shares)
    rows = tokens if routing == "token" else 1
    router = rows * (route_dim or width) * len(dims) if len(dims) > 1 else 0
    return tokens * exp, tokens * lo, tokens * hi, float(router)


def flops(
    config: SubnetConfig,
    protocol: FlopsProtocol | None = None,
    *,
    routing: RoutingCounts | None = None,
) -> FlopsReport:
    """Analytic FLOPs of ``config`` under ``protocol`` (default: HAT's batch 1, 30 + 30).

    Args:
        config: the subnet.
        protocol: input sizes and whether the output projection counts.
        routing: observed routing counts; None = uniform routing (the headline number,
            exact for dense and homogeneous-MoE subnets, whatever the routing).
    """
    p = protocol or FlopsProtocol()
    if routing is not None:
        routing.check(config)
    S, T, q = p.src_len, p.tgt_len, config.qkv_dim
    de, dd = config.encoder_embed_dim, config.decoder_embed_dim
    parts = dict.fromkeys((*FLOPS_COMPONENTS, "output_projection"), 0.0)
    lo = hi = 0.0
    for i, dims in enumerate(config.encoder_expert_dims):
        parts["encoder_self_attention"] += _attention(S, S, de, de, q)
        counts = None if routing is None else routing.encoder[i]
        e, a, b, r = _moe(S, de, dims, config.encoder_top_k[i], counts, config.encoder_routing)
        parts["encoder_ffn"] += e
        parts["encoder_router"] += r
        lo, hi = lo + a - e, hi + b - e
    for i, dims in enumerate(config.decoder_expert_dims):
        parts["decoder_self_attention"] += _attention(T, T, dd, dd, q)
        span = cross_attention_span(config, i) * S
        parts["decoder_cross_attention"] += _attention(T, span, dd, de, q)
        counts = None if routing is None else routing.decoder[i]
        e, a, b, r = _moe(T, dd, dims, config.decoder_top_k[i], counts, config.decoder_routing,
                          config.route_dim("decoder"))
        parts["decoder_ffn"] += e
        parts["decoder_router"] += r
        lo, hi = lo + a - e, hi + b - e
    if p.include_output_projection:
        assert p.vocab_size is not None  # checked by FlopsProtocol
        parts["output_projection"] = float(T * dd * p.vocab_size)
    parts = {k: v * p.batch for k, v in parts.items()}
    macs = sum(parts.values())
    return FlopsReport(
        macs=macs,
        macs_min=macs + lo * p.batch,
        macs_max=macs + hi * p.batch,
        breakdown=parts,
        routing="uniform" if routing is None else "observed",
        protocol=p,
    )
