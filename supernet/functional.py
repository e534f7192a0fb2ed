"""The math of the model as pure functions of weight tensors.

The supernet passes leading slices of its maximal weights, the static `Transformer` passes
its own tensors: both run exactly this code, so an extracted subnet computes what the
supernet computed. Attention uses explicit matmuls (``q @ k^T``, ``p @ v``), which fvcore and
`FlopCounterMode` count exactly (they undercount fused SDPA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from supernet.quant import QuantizedExpert, quantized_expert_ffn

__all__ = [
    "AttnWeights",
    "NormWeights",
    "ExpertWeights",
    "MoEWeights",
    "LayerStats",
    "sinusoidal_positions",
    "layer_norm",
    "project_kv",
    "attention",
    "expert_ffn",
    "moe_ffn",
    "index_dispatch",
    "gather_dispatch",
    "route",
    "DISPATCHES",
    "GATHER_DISPATCH_MAX_TOKENS",
    "reference_moe_ffn",
]


# Calls of at most this many tokens take the gather path in ``dispatch="auto"``, set from
# scripts/bench_moe_dispatch.py on a quiet machine (docs/benchmarks.md, SuperNet section 3).
# Both paths run the same matmuls; they differ in per-call overhead (one host sync and a
# sort, or one ``nonzero`` per expert).
GATHER_DISPATCH_MAX_TOKENS = 0
DISPATCHES = ("auto", "index", "gather")


class AttnWeights(NamedTuple):
    """Multi-head attention projections: q/k/v [qkv, d_in] (+ bias [qkv]), o [d_out, qkv]."""

    q_w: torch.Tensor
    q_b: torch.Tensor
    k_w: torch.Tensor
    k_b: torch.Tensor
    v_w: torch.Tensor
    v_b: torch.Tensor
    o_w: torch.Tensor
    o_b: torch.Tensor


class NormWeights(NamedTuple):
    """Layer norm affine parameters, each [d]."""

    w: torch.Tensor
    b: torch.Tensor


class ExpertWeights(NamedTuple):
    """One FFN expert: w1 [h, d], b1 [h], w2 [d, h], b2 [d]."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor


class MoEWeights(NamedTuple):
    """An MoE FFN: router [n, d_r] + [n] (None when n = 1: a dense FFN), n experts, top-k,
    and what the router reads (``routing``, `search_spaces.config.ROUTINGS`): each token's
    own state (d_r = d) or one row per sentence (`moe_ffn`'s ``rows``)."""

    router_w: torch.Tensor | None
    router_b: torch.Tensor | None
    experts: tuple[ExpertWeights | QuantizedExpert, ...]
    top_k: int
    routing: str = "token"


class LayerStats(NamedTuple):
    """Routing statistics of one layer: counts [n] long (non-padding assignments per
    expert); load_balance / z_loss scalars, None for a dense layer."""

    counts: torch.Tensor
    load_balance: torch.Tensor | None
    z_loss: torch.Tensor | None


def sinusoidal_positions(length: int, dim: int, *, offset: int = 0,
                         device: torch.device | None = None) -> torch.Tensor:
    """[length, dim] float32 sinusoidal embeddings of positions offset..offset+length-1
    (fairseq layout: sines in the first half, cosines in the second). A model either computes
    it for each width or slices the first d columns of one wide table
    (`ModelOptions.positions_dim`)."""
    half = dim // 2
    step = math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -step)
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
    args = pos[:, None] * freq[None, :]
    out = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        out = F.pad(out, (0, 1))
    return out


def layer_norm(x: torch.Tensor, w: NormWeights) -> torch.Tensor:
    """Layer norm over the last dim (eps 1e-5, as nn.LayerNorm)."""
    return F.layer_norm(x, (w.w.shape[0],), w.w, w.b, 1e-5)


def project_kv(x: torch.Tensor, w: AttnWeights, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of x [B, L, d_in]: each [B, heads, L, qkv // heads]."""
    b, n, _ = x.shape
    head_dim = w.k_w.shape[0] // heads
    k = F.linear(x, w.k_w, w.k_b).view(b, n, heads, head_dim).transpose(1, 2)
    v = F.linear(x, w.v_w, w.v_b).view(b, n, heads, head_dim).transpose(1, 2)
    return k, v


def attention(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: AttnWeights, heads: int, *,
              mask: torch.Tensor | None, dropout: float, training: bool) -> torch.Tensor:
    """Scaled dot-product attention of queries from x [B, T, d_in] over k, v
    [B, heads, L, head_dim]; mask broadcastable to [B, heads, T, L], True = not visible.
    Returns [B, T, d_out]. Scores and softmax are in fp32 whatever the weights' dtype."""
    b, t, _ = x.shape
    head_dim = w.q_w.shape[0] // heads
    q = F.linear(x, w.q_w, w.q_b) * head_dim**-0.5
    q = q.view(b, t, heads, head_dim).transpose(1, 2)  # [B, H, T, hd]
    scores = q @ k.transpose(-1, -2)  # [B, H, T, L]
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    probs = F.dropout(probs, dropout, training)
    ctx = (probs @ v).transpose(1, 2).reshape(b, t, heads * head_dim)  # [B, T, qkv]
    return F.linear(ctx, w.o_w, w.o_b)


def expert_ffn(x: torch.Tensor, w: ExpertWeights | QuantizedExpert, *, activation_dropout: float,
               training: bool) -> torch.Tensor:
    """One expert (or a dense FFN): ``fc2(dropout(relu(fc1(x))))``, x [N, d] -> [N, d].
    A `QuantizedExpert` (eval only: it has no gradient) runs `quantized_expert_ffn`."""
    if isinstance(w, QuantizedExpert):
        if training:
            raise ValueError("expert_ffn: a quantized expert runs in eval mode only")
        return quantized_expert_ffn(x, w)
    h = F.dropout(F.relu(F.linear(x, w.w1, w.b1)), activation_dropout, training)
    return F.linear(h, w.w2, w.b2)


def route(x: torch.Tensor, w: MoEWeights, *, token_mask: torch.Tensor | None, jitter: float,
          training: bool, normalize_gates: bool, random_routing: bool = False,
          rows: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, LayerStats]:
    """Top-k routing of x [N, d] in fp32 (autocast off).

    Returns gates [N, k] (the selected probabilities, renormalised if asked), experts
    [N, k] long, and the layer's statistics over the tokens where token_mask [N] is True.
    With `random_routing` (the router warm-up of supernet training) each token goes to k
    distinct experts drawn uniformly at random (torch's global RNG) with gates 1/k, and the
    router gets no gradient: every expert trains on an even share of tokens before the
    router starts choosing.

    With ``rows`` [B, d_r] (sentence or task routing; x is then B sentences of N / B
    tokens each, [B·T, d] flattened) the router reads one row per sentence, and every token
    of sentence b gets row b's gates and experts (jitter and random routing per sentence
    too). The statistics are over tokens either way, so the load-balancing loss weighs a
    sentence (a task) by its tokens.
    """
    assert w.router_w is not None and w.router_b is not None
    n, k = len(w.experts), w.top_k
    with torch.autocast(device_type=x.device.type, enabled=False):
        xr = (x if rows is None else rows).float()
        if training and jitter > 0:  # multiplicative input jitter (Switch / DeepSpeed)
            xr = xr * torch.empty_like(xr).uniform_(1.0 - jitter, 1.0 + jitter)
        if random_routing:
            logits = torch.rand(xr.shape[0], n, device=x.device)  # no path to the router
            probs = torch.full_like(logits, 1.0 / n)
            experts = logits.topk(k, dim=-1).indices
            gates = torch.full((xr.shape[0], k), 1.0 / k, device=x.device)
        else:
            logits = F.linear(xr, w.router_w.float(), w.router_b.float())  # [N or B, n]
            probs = torch.softmax(logits, dim=-1)
            gates, experts = probs.topk(k, dim=-1)  # [N or B, k]
            if normalize_gates and k > 1:
                gates = gates / gates.sum(dim=-1, keepdim=True)
        if rows is not None:  # one decision per sentence, broadcast to its tokens
            logits, probs, gates, experts = (_per_token(t, x.shape[0])
                                             for t in (logits, probs, gates, experts))
        m = (torch.ones(x.shape[0], device=x.device) if token_mask is None
             else token_mask.float())
        ntok = m.sum().clamp(min=1.0)
        # [n] non-padding (token, slot) assignments; a scatter, not bincount, so the shape
        # stays static for export
        slots = torch.zeros(n, device=x.device).scatter_add_(
            0, experts.reshape(-1), m.repeat_interleave(k))
        frac = slots / (ntok * k)
        mean_prob = (probs * m[:, None]).sum(dim=0) / ntok
        load_balance = n * (frac * mean_prob).sum()
        z_loss = (torch.logsumexp(logits, dim=-1).square() * m).sum() / ntok
    return gates, experts, LayerStats(slots.round().long(), load_balance, z_loss)


def _per_token(t: torch.Tensor, tokens: int) -> torch.Tensor:
    """[B, m] per-sentence values -> [tokens, m], each row repeated tokens / B times in
    order (an expand: it traces with the batch's shape, not a constant)."""
    b = t.shape[0]
    return t.unsqueeze(1).expand(b, tokens // b, t.shape[1]).reshape(tokens, t.shape[1])


def moe_ffn(x: torch.Tensor, w: MoEWeights, *, token_mask: torch.Tensor | None = None,
            activation_dropout: float = 0.0, training: bool = False, jitter: float = 0.0,
            normalize_gates: bool = False, dispatch: str = "auto",
            random_routing: bool = False, rows: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, LayerStats]:
    """Dropless top-k MoE FFN of x [N, d] -> ([N, d], stats); one expert = dense FFN.
    ``rows`` [B, d_r]: what a sentence- or task-routed router reads (see `route`).

    ``dispatch`` picks how tokens reach their experts (the same function either way):
    "index" (`index_dispatch`: sizes on the host), "gather" (`gather_dispatch`: no host
    sync, what ONNX export traces) or "auto" (gather for calls of at most
    `GATHER_DISPATCH_MAX_TOKENS` tokens, index otherwise). Padding tokens are computed like
    the others (their outputs are never read) but excluded from the statistics.
    """
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
    if len(w.experts) == 1:  # dense FFN, exactly: no router, no gate
        y = expert_ffn(x, w.experts[0], activation_dropout=activation_dropout,
                       training=training)
        count = (torch.tensor(x.shape[0], device=x.device) if token_mask is None
                 else token_mask.sum())
        return y, LayerStats(count.reshape(1).long(), None, None)
    gates, experts, stats = route(x, w, token_mask=token_mask, jitter=jitter,
                                  training=training, normalize_gates=normalize_gates,
                                  random_routing=random_routing, rows=rows)
    gather = dispatch == "gather" or (dispatch == "auto"
                                      and x.shape[0] <= GATHER_DISPATCH_MAX_TOKENS)
    run = gather_dispatch if gather else index_dispatch
    return run(x, w, gates, experts, activation_dropout=activation_dropout,
               training=training), stats


def index_dispatch(x: torch.Tensor, w: MoEWeights, gates: torch.Tensor, experts: torch.Tensor,
                   *, activation_dropout: float, training: bool) -> torch.Tensor:
    """Experts' weighted outputs [N, d] for x [N, d] routed to ``experts`` [N, k] with
    ``gates`` [N, k], by index: the N·k (token, expert) slots are sorted by expert, the
    tokens gathered once, each expert runs on its contiguous slice, outputs are scaled by
    their gate and summed back with ``index_add_`` (so top-k > 1 sums and autograd works).
    Slice sizes come to the host (one sync), so shapes depend on the routing."""
    k = w.top_k
    flat = experts.reshape(-1)  # [N·k]
    order = torch.argsort(flat, stable=True)
    sizes = torch.bincount(flat, minlength=len(w.experts)).tolist()  # one host sync
    token = order // k
    xs = x.index_select(0, token)  # [N·k, d], contiguous per expert
    outs = []
    for e, (chunk, ew) in enumerate(zip(torch.split(xs, sizes), w.experts, strict=True)):
        if sizes[e]:
            outs.append(expert_ffn(chunk, ew, activation_dropout=activation_dropout,
                                   training=training))
    if not outs:  # an empty batch
        return torch.zeros_like(x)
    ys = torch.cat(outs) if len(outs) > 1 else outs[0]
    ys = ys * gates.reshape(-1)[order].unsqueeze(1).to(ys.dtype)
    out = torch.zeros(x.shape[0], ys.shape[1], dtype=ys.dtype, device=x.device)
    return out.index_add_(0, token, ys)


def gather_dispatch(x: torch.Tensor, w: MoEWeights, gates: torch.Tensor, experts: torch.Tensor,
                    *, activation_dropout: float, training: bool) -> torch.Tensor:
    """What `index_dispatch` computes, without a host sync: each expert gathers the tokens
    that picked it (``nonzero``), runs on them alone and adds its gated outputs back. The
    operations do not depend on the routing, only the gathered sizes do, so it traces into
    one graph with data-dependent shapes (ONNX export: ``NonZero``, ``Gather``,
    ``ScatterND``) that computes the routed tokens only. x [N, d], gates / experts [N, k]
    -> [N, d]."""
    n, k = x.shape[0], w.top_k
    flat_experts, flat_gates = experts.reshape(-1), gates.reshape(-1)  # [N·k]
    # [N·k]: each slot's token, as a lookup (slot // k exports as ~8 ONNX ops per expert)
    slot_token = torch.arange(n, device=x.device).unsqueeze(1).expand(n, k).reshape(-1)
    out = torch.zeros_like(x)
    for e, ew in enumerate(w.experts):
        slot = (flat_experts == e).nonzero().squeeze(1)  # [n_e]: (token, slot) ids
        token = slot_token.index_select(0, slot)  # distinct: a token picks an expert once
        y = expert_ffn(x.index_select(0, token), ew, activation_dropout=activation_dropout,
                       training=training)
        out = out.index_add(0, token, y * flat_gates.index_select(0, slot).unsqueeze(1)
                            .to(y.dtype))
    return out


def reference_moe_ffn(x: torch.Tensor, w: MoEWeights, *, normalize_gates: bool = False,
                      gates_experts: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Naive MoE (for tests and benchmarks): per expert, a boolean mask over all tokens.
    Deterministic (no dropout, no jitter). ``gates_experts`` may pass precomputed routing."""
    if len(w.experts) == 1:
        return expert_ffn(x, w.experts[0], activation_dropout=0.0, training=False)
    if gates_experts is None:
        gates, experts, _ = route(x, w, token_mask=None, jitter=0.0, training=False,
                                  normalize_gates=normalize_gates)
    else:
        gates, experts = gates_experts
    out = torch.zeros_like(x)
    for e, ew in enumerate(w.experts):
        hit = experts == e  # [N, k]
        rows = hit.any(dim=1)
        if not bool(rows.any()):
            continue
        gate = (gates * hit).sum(dim=1)[rows]  # a token routes to an expert at most once
        y = expert_ffn(x[rows], ew, activation_dropout=0.0, training=False)
        out[rows] = out[rows] + y * gate.unsqueeze(1).to(y.dtype)
    return out
