"""What the models return besides logits: MoE auxiliary losses and routing counts (`MoEAux`),
the encoder's output (`EncoderOut`) and the incremental-decoding state (`DecoderCache`).
Plain containers, shared by the supernet's bound view and the static `Transformer`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["MoEAux", "EncoderOut", "DecoderCache"]


@dataclass(frozen=True)
class MoEAux:
    """MoE auxiliary outputs of one forward pass (returned, never stored in a module).

    Attributes:
        load_balance: scalar tensor, the Switch load-balancing loss summed over the routed
            layers (layers with more than one expert); each layer's term is
            ``n * sum_i f_i * P_i`` over its n active experts, with ``f_i`` the fraction of
            the layer's (token, slot) assignments that went to expert i and ``P_i`` its mean
            router probability, over non-padding tokens. Uniform routing gives 1 per layer.
        z_loss: scalar tensor, the router z-loss ``mean_tokens(logsumexp(logits)^2)`` summed
            over the routed layers (the trainer decides whether to use it).
        encoder_counts: per active encoder layer, a long tensor [n_i]: the non-padding
            (token, slot) assignments each expert received (a dense layer: [tokens]).
        decoder_counts: the same for the decoder.
        moe_layers: the number of routed layers that contributed to the two losses.
    """

    load_balance: torch.Tensor
    z_loss: torch.Tensor
    encoder_counts: tuple[torch.Tensor, ...] = ()
    decoder_counts: tuple[torch.Tensor, ...] = ()
    moe_layers: int = 0

    def __add__(self, other: MoEAux) -> MoEAux:
        """Encoder aux + decoder aux (losses add, counts concatenate per side)."""
        return MoEAux(self.load_balance + other.load_balance, self.z_loss + other.z_loss,
                      self.encoder_counts + other.encoder_counts,
                      self.decoder_counts + other.decoder_counts,
                      self.moe_layers + other.moe_layers)

    def routing_counts(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        """``(encoder, decoder)`` counts as nested int tuples (the shape of
        `automoe.costs.flops.RoutingCounts`)."""
        def side(counts: tuple[torch.Tensor, ...]) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(int(v) for v in c.tolist()) for c in counts)
        return side(self.encoder_counts), side(self.decoder_counts)


@dataclass(frozen=True)
class EncoderOut:
    """The encoder's output, as the decoder reads it.

    Attributes:
        states: the outputs of the last ``min(3, encoder layers)`` encoder layers, oldest
            first, each [B, S, d_enc] (decoder layers with arbitrary encoder-decoder
            attention read the last 1-3 of them concatenated along time).
        padding_mask: [B, S] bool, True at padding positions of the source.
        aux: the encoder's MoE auxiliary outputs.
        tags: [B] long, each source's first token (the target-language tag of multilingual
            data), what task-routed decoder layers route by; None when unknown.
    """

    states: tuple[torch.Tensor, ...]
    padding_mask: torch.Tensor
    aux: MoEAux
    tags: torch.Tensor | None = None

    @property
    def out(self) -> torch.Tensor:
        """[B, S, d_enc]: the last encoder layer's output."""
        return self.states[-1]

    def index_select(self, order: torch.Tensor) -> EncoderOut:
        """Rows ``order`` [B'] of the batch (beam expansion and reordering)."""
        return EncoderOut(tuple(s.index_select(0, order) for s in self.states),
                          self.padding_mask.index_select(0, order), self.aux,
                          None if self.tags is None else self.tags.index_select(0, order))


@dataclass
class DecoderCache:
    """Incremental-decoding state: per decoder layer the self-attention keys/values of the
    tokens fed so far, and the cross-attention keys/values of the encoder output (computed
    at the first step, reused after). Create with ``model.new_cache()``.

    Attributes:
        length: target tokens already processed (the next token's position).
        self_kv: layer index -> (k, v), each [B, heads, length, head_dim].
        cross_kv: layer index -> (k, v), each [B, heads, span * S, head_dim].
    """

    length: int = 0
    self_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    cross_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def reorder(self, order: torch.Tensor) -> None:
        """Keeps rows ``order`` [B'] of every cached tensor (beam search), in place."""
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, order), v.index_select(0, order))
