"""Elastic layers: maximal weights that hand out leading slices for one architecture.

Each module stores the largest tensors and returns, for requested sizes, a tree of views
(`supernet.functional` weight tuples); nothing is stored per call, so there is no "active
subnet" state. Slicing rules (HAT / AutoMoE):

- linear ``W[:out, :in]``, bias ``b[:out]``; layer norm ``w[:d]``;
- attention: q/k/v rows ``[:qkv]`` (heads are a reshape of the qkv dim), columns sliced to
  the input width (cross-attention keys/values: the encoder's width);
- MoE: the first n experts and router rows ``[:n, :d]`` (one router per routing the space
  allows: token and task routers read width d, a sentence router the width of what it
  pools, the decoder's the encoder's); expert e keeps the first ``h_e``
  hidden units of its own weights ``w1[e, :h_e, :d]``, ``w2[e, :d, :h_e]``. An expert below
  32 bits is handed out as a `supernet.quant.QuantizedExpert`: post-training quantization
  of its slices, cached per (expert, slice, bits) until the weights change.
"""

from __future__ import annotations

import torch
from torch import nn

from supernet.functional import AttnWeights, ExpertWeights, MoEWeights, NormWeights
from supernet.quant import QuantizedExpert, quantize_expert

__all__ = ["ElasticAttention", "ElasticNorm", "ElasticMoE"]


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class ElasticAttention(nn.Module):
    """Attention with maximal widths ``q_in`` (queries, output), ``kv_in`` (keys/values)
    and ``qkv`` (inner dim)."""

    def __init__(self, *, q_in: int, kv_in: int, qkv: int) -> None:
        super().__init__()
        self.q_w, self.q_b = _param(qkv, q_in), _param(qkv)
        self.k_w, self.k_b = _param(qkv, kv_in), _param(qkv)
        self.v_w, self.v_b = _param(qkv, kv_in), _param(qkv)
        self.o_w, self.o_b = _param(q_in, qkv), _param(q_in)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for w in (self.q_w, self.k_w, self.v_w, self.o_w):
            nn.init.xavier_uniform_(w, generator=generator)
        for b in (self.q_b, self.k_b, self.v_b, self.o_b):
            b.zero_()

    def weights(self, d_q: int, d_kv: int, qkv: int) -> AttnWeights:
        return AttnWeights(self.q_w[:qkv, :d_q], self.q_b[:qkv], self.k_w[:qkv, :d_kv],
                           self.k_b[:qkv], self.v_w[:qkv, :d_kv], self.v_b[:qkv],
                           self.o_w[:d_q, :qkv], self.o_b[:d_q])


class ElasticNorm(nn.Module):
    """Layer norm of maximal width d."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight, self.bias = _param(d), _param(d)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)
        self.bias.zero_()

    def weights(self, d: int) -> NormWeights:
        return NormWeights(self.weight[:d], self.bias[:d])


# The router parameters of each routing (the token router keeps its original names).
_ROUTER_NAMES = {"token": "router", "task": "task_router", "sentence": "sentence_router"}


class ElasticMoE(nn.Module):
    """Up to ``experts`` experts of hidden size up to ``hidden`` on width up to ``d``, with
    one router per routing in ``routings`` (a sentence router reads ``pooled_dim``, default
    d); routers exist only when more than one expert is possible."""

    def __init__(self, *, d: int, hidden: int, experts: int,
                 routings: tuple[str, ...] = ("token",), pooled_dim: int | None = None) -> None:
        super().__init__()
        self.max_experts, self.max_hidden, self.max_dim = experts, hidden, d
        self.routings = tuple(r for r in _ROUTER_NAMES if r in routings)
        for routing, name in _ROUTER_NAMES.items():
            if experts > 1 and routing in self.routings:
                width = pooled_dim or d if routing == "sentence" else d
                setattr(self, f"{name}_w", _param(experts, width))
                setattr(self, f"{name}_b", _param(experts))
            elif routing == "token":  # absent, but the attributes exist (None)
                self.register_parameter("router_w", None)
                self.register_parameter("router_b", None)
        self.w1, self.b1 = _param(experts, hidden, d), _param(experts, hidden)
        self.w2, self.b2 = _param(experts, d, hidden), _param(experts, d)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for e in range(self.max_experts):  # each expert as its own xavier-initialised pair
            nn.init.xavier_uniform_(self.w1[e], generator=generator)
            nn.init.xavier_uniform_(self.w2[e], generator=generator)
        self.b1.zero_()
        self.b2.zero_()
        for routing in self.routings:  # the token router first, as before other routers existed
            w, b = self._router(routing)
            if w is not None and b is not None:
                nn.init.xavier_uniform_(w, generator=generator)
                b.zero_()

    def _router(self, routing: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        name = _ROUTER_NAMES[routing]
        return getattr(self, f"{name}_w", None), getattr(self, f"{name}_b", None)

    def weights(self, d: int, dims: tuple[int, ...], top_k: int,
                bits: tuple[int, ...] | None = None, *, routing: str = "token",
                route_dim: int | None = None) -> MoEWeights:
        """Expert e: hidden ``dims[e]`` at ``bits[e]`` (None: all 32, views of the weights);
        the router of ``routing`` reading width ``route_dim`` (default d)."""
        n = len(dims)
        experts = tuple(
            ExpertWeights(self.w1[e, :h, :d], self.b1[e, :h], self.w2[e, :d, :h], self.b2[e, :d])
            if bits is None or bits[e] == 32 else self._quantized(e, h, d, bits[e])
            for e, h in enumerate(dims))
        if n == 1:
            return MoEWeights(None, None, experts, top_k)
        w, b = self._router(routing)
        if w is None or b is None:
            raise ValueError(f"this supernet has no {routing}-routed router (its space's "
                             f"routings: {list(self.routings)})")
        return MoEWeights(w[:n, : route_dim or d], b[:n], experts, top_k, routing)

    @torch.no_grad()
    def _quantized(self, e: int, h: int, d: int, bits: int) -> QuantizedExpert:
        # The stamp (storage, in-place version counter) changes on any optimizer step, load
        # or move of the weights, so a cached copy is never stale. The cache lives in
        # __dict__, outside the state dict and the module's parameters.
        stamp = tuple((p.data_ptr(), p._version) for p in (self.w1, self.b1, self.w2, self.b2))
        cache = self.__dict__.setdefault("_quant_cache", {})
        hit = cache.get((e, h, d, bits))
        if hit is None or hit[0] != stamp:
            w = ExpertWeights(self.w1[e, :h, :d], self.b1[e, :h], self.w2[e, :d, :h], self.b2[e, :d])
            hit = (stamp, quantize_expert(w, bits))
            cache[(e, h, d, bits)] = hit
        return hit[1]
