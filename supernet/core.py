"""The encoder-decoder forward pass over resolved weights (`ModelWeights`).

A model resolves its weights for one architecture (the supernet: leading slices of its
maximal tensors; the static `Transformer`: its own tensors) into the NamedTuple trees below
and calls `encode` / `decode`. Nothing here holds state or knows about slicing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from supernet.functional import (
    AttnWeights,
    LayerStats,
    MoEWeights,
    NormWeights,
    attention,
    layer_norm,
    moe_ffn,
    project_kv,
    sinusoidal_positions,
)
from supernet.options import ModelOptions, scaled_rate
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.tokens import PAD_ID

__all__ = ["EncoderLayerWeights", "DecoderLayerWeights", "StackWeights", "ModelWeights",
           "Run", "run_settings", "encode", "decode", "cross_kv", "task_rows", "MAX_ENDE_ATTN",
           "check_full_precision"]

MAX_ENDE_ATTN = 3  # the decoder reads at most the last 3 encoder layers (HAT)


def check_full_precision(config: Any, *, source: str, reason: str) -> None:
    """ValueError unless every expert of ``config`` is at 32 bits, naming its bits and
    ``reason`` (what only runs fp32 experts: training, ONNX export)."""
    if not config.is_full_precision:
        bits = config.to_dict()
        raise ValueError(f"{source}: experts below 32 bits (encoder_expert_bits "
                         f"{bits['encoder_expert_bits']}, decoder_expert_bits "
                         f"{bits['decoder_expert_bits']}); {reason}")


class EncoderLayerWeights(NamedTuple):
    self_attn: AttnWeights
    heads: int
    attn_norm: NormWeights
    moe: MoEWeights
    ffn_norm: NormWeights


class DecoderLayerWeights(NamedTuple):
    self_attn: AttnWeights
    heads: int
    attn_norm: NormWeights
    cross_attn: AttnWeights
    cross_heads: int
    ende_attn: int  # how many of the last encoder layers the cross-attention reads
    cross_norm: NormWeights
    moe: MoEWeights
    ffn_norm: NormWeights


class StackWeights(NamedTuple):
    """One stack (encoder or decoder): its layers, final norm (pre-LN only), width."""

    layers: tuple
    final_norm: NormWeights | None
    dim: int


class ModelWeights(NamedTuple):
    """embed: the shared token embedding [V, >= max(d_enc, d_dec)]; the encoder uses its
    first d_enc columns, the decoder (and the tied output projection) its first d_dec."""

    embed: torch.Tensor
    encoder: StackWeights
    decoder: StackWeights


class Run(NamedTuple):
    """How one stack runs: dropout rates (already width-scaled) and flags."""

    dropout: float
    activation_dropout: float
    attention_dropout: float
    normalize_before: bool
    jitter: float
    normalize_gates: bool
    training: bool
    max_positions: int
    positions_dim: int | None = None  # the shared sinusoid's width (None: the stack's own)
    dispatch: str = "auto"  # the MoE dispatch, `supernet.functional.moe_ffn`
    random_routing: bool = False  # router warm-up: tokens to uniformly random experts


def run_settings(options: ModelOptions, *, dim: int, side: int, training: bool,
                 random_routing: bool = False) -> Run:
    """Run settings of a stack of width ``dim``; ``side`` 0 = encoder, 1 = decoder;
    `random_routing` (training only): the router warm-up's uniformly random routing."""
    ref = dim if options.dropout_reference_dims is None else options.dropout_reference_dims[side]
    return Run(scaled_rate(options.dropout, dim, ref),
               scaled_rate(options.activation_dropout, dim, ref),
               options.attention_dropout, options.normalize_before, options.router_jitter,
               options.normalize_gates, training, options.max_positions,
               options.positions_dim, random_routing=training and random_routing)


def _embed(tokens: torch.Tensor, table: torch.Tensor, *, offset: int, run: Run) -> torch.Tensor:
    """Scaled token embedding plus sinusoidal positions: tokens [B, T] -> [B, T, d].

    The positions are the first d columns of a ``run.positions_dim``-wide sinusoid when set
    (HAT), else a d-wide sinusoid."""
    length, dim = tokens.shape[1], table.shape[1]
    if offset + length > run.max_positions:
        raise ValueError(f"sequence of {offset + length} tokens exceeds max_positions "
                         f"{run.max_positions}")
    x = F.embedding(tokens, table, padding_idx=PAD_ID) * math.sqrt(dim)
    width = run.positions_dim or dim
    if width < dim:
        raise ValueError(f"positions_dim {width} is narrower than the embedding width {dim}")
    pos = sinusoidal_positions(length, width, offset=offset, device=x.device)[:, :dim]
    x = x + pos.to(x.dtype)
    return F.dropout(x, run.dropout, run.training)


def _residual(x: torch.Tensor, norm: NormWeights, run: Run,
              sublayer: Callable[..., tuple[torch.Tensor, Any]], *args: Any
              ) -> tuple[torch.Tensor, Any]:
    """One residual block around ``sublayer(h, *args) -> (y, extra)``, x and y [B, T, d]:
    pre-LN normalises the block's input (x + f(LN(x))), post-LN its sum (LN(x + f(x))).
    Returns the new x and the sublayer's ``extra``."""
    h = layer_norm(x, norm) if run.normalize_before else x
    y, extra = sublayer(h, *args)
    x = x + F.dropout(y, run.dropout, run.training)
    return (x if run.normalize_before else layer_norm(x, norm)), extra


def _self_attention(h: torch.Tensor, lw: EncoderLayerWeights | DecoderLayerWeights,
                    mask: torch.Tensor | None, run: Run, cache: DecoderCache | None = None,
                    layer: int = 0) -> tuple[torch.Tensor, None]:
    """h [B, T, d] -> [B, T, d]; with a cache, this layer's keys/values are appended to it."""
    k, v = project_kv(h, lw.self_attn, lw.heads)
    if cache is not None:
        if layer in cache.self_kv:
            pk, pv = cache.self_kv[layer]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        cache.self_kv[layer] = (k, v)
    return attention(h, k, v, lw.self_attn, lw.heads, mask=mask,
                     dropout=run.attention_dropout, training=run.training), None


def _cross_attention(h: torch.Tensor, lw: DecoderLayerWeights, enc: EncoderOut, run: Run,
                     cache: DecoderCache | None, layer: int) -> tuple[torch.Tensor, None]:
    """h [B, T, d_dec] -> [B, T, d_dec], attending to the encoder outputs (K/V cached)."""
    if cache is not None and layer in cache.cross_kv:
        ck, cv = cache.cross_kv[layer]
        span = ck.shape[2] // enc.padding_mask.shape[1]
        cmask = enc.padding_mask.repeat(1, span)[:, None, None, :]
    else:
        ck, cv, cmask = _cross_kv(enc, lw)
        if cache is not None:
            cache.cross_kv[layer] = (ck, cv)
    return attention(h, ck, cv, lw.cross_attn, lw.cross_heads, mask=cmask,
                     dropout=run.attention_dropout, training=run.training), None


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x [B, T, d] averaged over the positions where keep [B, T] is True -> [B, d]."""
    m = keep.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def _ffn(h: torch.Tensor, moe: MoEWeights, token_mask: torch.Tensor, run: Run,
         task: torch.Tensor | None = None, pooled: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, LayerStats]:
    """h [B, T, d] -> ([B, T, d], routing stats); token_mask [B, T] (False at PAD).

    What a routed layer's router reads (``moe.routing``): each token of h ("token"), the
    sentence's ``task`` row [B, d] (the tag's embedding) or its ``pooled`` row [B, d_r]
    ("sentence"; default: the mean of h over the sentence's tokens)."""
    b, t, d = h.shape
    rows = None
    if len(moe.experts) > 1 and moe.routing == "task":
        rows = task
    elif len(moe.experts) > 1 and moe.routing == "sentence":
        rows = _masked_mean(h, token_mask) if pooled is None else pooled
    y, stats = moe_ffn(h.reshape(b * t, d), moe, token_mask=token_mask.reshape(-1),
                       activation_dropout=run.activation_dropout, training=run.training,
                       jitter=run.jitter, normalize_gates=run.normalize_gates,
                       dispatch=run.dispatch, random_routing=run.random_routing, rows=rows)
    return y.view(b, t, d), stats


def task_rows(tags: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """What a task-routed router reads: the embeddings [B, d] of the sentences' first source
    tokens ``tags`` [B] (the target-language tag of multilingual data) in ``table`` [V, d]."""
    return F.embedding(tags, table)


def _aux(stats: list[LayerStats], like: torch.Tensor, *, encoder: bool) -> MoEAux:
    routed = [s for s in stats if s.load_balance is not None]
    zero = torch.zeros((), device=like.device, dtype=torch.float32)
    lb = sum((s.load_balance for s in routed if s.load_balance is not None), zero)
    z = sum((s.z_loss for s in routed if s.z_loss is not None), zero)
    counts = tuple(s.counts for s in stats)
    if encoder:
        return MoEAux(lb, z, encoder_counts=counts, moe_layers=len(routed))
    return MoEAux(lb, z, decoder_counts=counts, moe_layers=len(routed))


def encode(src: torch.Tensor, weights: ModelWeights, run: Run) -> EncoderOut:
    """src [B, S] (right-padded with PAD_ID) -> EncoderOut (last <= 3 layer outputs)."""
    stack = weights.encoder
    pad = src.eq(PAD_ID)  # [B, S]
    x = _embed(src, weights.embed[:, : stack.dim], offset=0, run=run)
    mask = pad[:, None, None, :]  # [B, 1, 1, S]
    keep = ~pad
    tags = src[:, 0]
    task = (task_rows(tags, weights.embed[:, : stack.dim])
            if any(lw.moe.routing == "task" and len(lw.moe.experts) > 1 for lw in stack.layers)
            else None)
    states: list[torch.Tensor] = []
    stats: list[LayerStats] = []
    for lw in stack.layers:
        x, _ = _residual(x, lw.attn_norm, run, _self_attention, lw, mask, run)
        x, st = _residual(x, lw.ffn_norm, run, _ffn, lw.moe, keep, run, task)
        stats.append(st)
        states = (states + [x])[-MAX_ENDE_ATTN:]
    if stack.final_norm is not None:  # pre-LN: every state the decoder reads is normalised
        states = [layer_norm(s, stack.final_norm) for s in states]
    return EncoderOut(tuple(states), pad, _aux(stats, x, encoder=True), tags)


def _cross_kv(enc: EncoderOut, lw: DecoderLayerWeights
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K/V of the last ``ende_attn`` encoder outputs concatenated along time, and the
    matching padding mask [B, 1, 1, span·S] (the source mask tiled)."""
    span = min(lw.ende_attn, len(enc.states))
    mem = enc.states[-span:]
    kv_in = mem[0] if span == 1 else torch.cat(mem, dim=1)  # [B, span·S, d_enc]
    k, v = project_kv(kv_in, lw.cross_attn, lw.cross_heads)
    mask = enc.padding_mask.repeat(1, span)[:, None, None, :]
    return k, v, mask


def cross_kv(enc: EncoderOut, weights: ModelWeights
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per decoder layer, the cross-attention keys and values of ``enc``, each
    [B, cross_heads, span·S, head_dim]: what a `DecoderCache` holds after its first step
    (an exported encoder computes them once, for the decoder-step graph to read)."""
    return tuple(_cross_kv(enc, lw)[:2] for lw in weights.decoder.layers)


def decode(prev: torch.Tensor, enc: EncoderOut, weights: ModelWeights, run: Run,
           cache: DecoderCache | None = None) -> tuple[torch.Tensor, MoEAux]:
    """prev [B, T] -> (logits [B, T, V], decoder MoEAux).

    Without a cache: teacher-forced over all T positions (causal mask). With a cache: prev
    holds the next T tokens (usually T = 1) after the ``cache.length`` already fed; keys and
    values are appended to the cache, which ends ``T`` longer.
    """
    stack = weights.decoder
    offset = 0 if cache is None else cache.length
    t = prev.shape[1]
    table = weights.embed[:, : stack.dim]
    x = _embed(prev, table, offset=offset, run=run)
    causal = None
    if t > 1:  # query i (position offset+i) sees keys 0..offset+i
        keys = torch.arange(offset + t, device=prev.device)
        queries = torch.arange(offset, offset + t, device=prev.device)
        causal = keys[None, :] > queries[:, None]  # [T, offset+T]
    keep = prev.ne(PAD_ID)
    routings = {lw.moe.routing for lw in stack.layers if len(lw.moe.experts) > 1}
    task = pooled = None
    if "task" in routings:
        if enc.tags is None:
            raise ValueError("a task-routed decoder needs the source's tags (EncoderOut.tags)")
        task = task_rows(enc.tags, table)
    if "sentence" in routings:  # the decoder's sentence: the source, as the encoder saw it
        pooled = _masked_mean(enc.out, ~enc.padding_mask)
    stats = []
    for i, lw in enumerate(stack.layers):
        x, _ = _residual(x, lw.attn_norm, run, _self_attention, lw, causal, run, cache, i)
        x, _ = _residual(x, lw.cross_norm, run, _cross_attention, lw, enc, run, cache, i)
        x, st = _residual(x, lw.ffn_norm, run, _ffn, lw.moe, keep, run, task, pooled)
        stats.append(st)
    if cache is not None:
        cache.length = offset + t
    if stack.final_norm is not None:
        x = layer_norm(x, stack.final_norm)
    logits = F.linear(x, table)  # tied output projection [B, T, V]
    return logits, _aux(stats, x, encoder=False)
