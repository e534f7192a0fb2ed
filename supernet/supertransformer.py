"""`SuperTransformer`: the weight-sharing supernet of a search space.

It holds the largest weights of its space and runs any subnet by leading slices (see
`supernet.elastic`). The subnet is an argument of every call (``model(src, prev, subnet)``,
``model.bind(subnet)``): no "active subnet" is stored, so two subnets evaluated one after
another, or from two threads, cannot leak into each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from search_spaces.config import SubnetConfig
from search_spaces.space import SearchSpace, SupernetDims
from supernet import core
from supernet.elastic import ElasticAttention, ElasticMoE, ElasticNorm
from supernet.options import DEFAULT_OPTIONS, ModelOptions
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.params import ParamCounts, count_params
from supernet.tokens import PAD_ID
from supernet.transformer import Transformer, init_generator

__all__ = ["SuperTransformer", "SubnetView"]


class _EncoderLayer(nn.Module):
    def __init__(self, *, d: int, qkv: int, hidden: int, experts: int,
                 routings: tuple[str, ...]) -> None:
        super().__init__()
        self.self_attn = ElasticAttention(q_in=d, kv_in=d, qkv=qkv)
        self.self_attn_norm = ElasticNorm(d)
        self.moe = ElasticMoE(d=d, hidden=hidden, experts=experts, routings=routings)
        self.ffn_norm = ElasticNorm(d)


class _DecoderLayer(nn.Module):
    def __init__(self, *, d: int, d_enc: int, qkv: int, hidden: int, experts: int,
                 routings: tuple[str, ...]) -> None:
        super().__init__()
        self.self_attn = ElasticAttention(q_in=d, kv_in=d, qkv=qkv)
        self.self_attn_norm = ElasticNorm(d)
        self.cross_attn = ElasticAttention(q_in=d, kv_in=d_enc, qkv=qkv)
        self.cross_attn_norm = ElasticNorm(d)
        # a sentence-routed decoder layer reads the pooled encoder output
        self.moe = ElasticMoE(d=d, hidden=hidden, experts=experts, routings=routings,
                              pooled_dim=d_enc)
        self.ffn_norm = ElasticNorm(d)


class SuperTransformer(nn.Module):
    """Encoder-decoder MoE supernet holding the maximal weights of a search space.

    Args:
        space: a `SearchSpace` (its ``supernet`` dims are used) or a `SupernetDims`.
        vocab_size: joint vocabulary size (one embedding table shared by source, target and
            the tied output projection).
        options: dropout (width-scaled as HAT), layer-norm placement, routing noise.
        seed: weight initialisation seed (an explicit generator; the global RNG is untouched).

    Call as ``model(src [B, S], prev [B, T], subnet) -> (logits [B, T, V], MoEAux)``.
    ``random_routing = True`` makes every MoE layer route uniformly at random in training
    mode (the router warm-up).
    """

    def __init__(self, space: SearchSpace | SupernetDims, vocab_size: int, *,
                 options: ModelOptions = DEFAULT_OPTIONS, seed: int = 0) -> None:
        super().__init__()
        dims = space.supernet if isinstance(space, SearchSpace) else space
        for name in ("encoder_embed_dim", "decoder_embed_dim", "qkv_dim", "encoder_layers",
                     "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_experts",
                     "decoder_experts"):
            value = getattr(dims, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SuperTransformer: supernet dim '{name}' must be an integer "
                                 f">= 1, got {value!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
            raise ValueError(f"vocab_size must be an integer >= 5, got {vocab_size!r}")
        self.space: SearchSpace | None = space if isinstance(space, SearchSpace) else None
        self.dims: SupernetDims = dims
        # the routings each side's routers learn (a bare SupernetDims: token routing)
        self.routings = ({"encoder": space.encoder_routing, "decoder": space.decoder_routing}
                         if isinstance(space, SearchSpace)
                         else {"encoder": ("token",), "decoder": ("token",)})
        self.vocab_size = vocab_size
        self.options = options.with_reference_dims(dims.encoder_embed_dim, dims.decoder_embed_dim)
        # the router warm-up of training (`TrainConfig.router_warmup`): in training mode,
        # every MoE layer routes tokens to uniformly random experts
        self.random_routing = False
        de, dd, q = dims.encoder_embed_dim, dims.decoder_embed_dim, dims.qkv_dim
        self.options.check_positions(max(de, dd), source="SuperTransformer")
        self.embed = nn.Parameter(torch.empty(vocab_size, max(de, dd)))
        self.encoder_layers = nn.ModuleList(
            _EncoderLayer(d=de, qkv=q, hidden=dims.encoder_ffn_dim, experts=dims.encoder_experts,
                          routings=self.routings["encoder"])
            for _ in range(dims.encoder_layers))
        self.decoder_layers = nn.ModuleList(
            _DecoderLayer(d=dd, d_enc=de, qkv=q, hidden=dims.decoder_ffn_dim,
                          experts=dims.decoder_experts, routings=self.routings["decoder"])
            for _ in range(dims.decoder_layers))
        pre = self.options.normalize_before
        self.encoder_norm = ElasticNorm(de) if pre else None
        self.decoder_norm = ElasticNorm(dd) if pre else None
        self.reset_parameters(init_generator(seed))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, (ElasticAttention, ElasticMoE)):
                module.reset_parameters(generator)
            elif isinstance(module, ElasticNorm):
                module.reset_parameters()
        nn.init.normal_(self.embed, std=self.embed.shape[1] ** -0.5, generator=generator)
        self.embed[PAD_ID].zero_()

    # ---- subnets -----------------------------------------------------------------------

    def check(self, config: SubnetConfig) -> None:
        """Raises ValueError (naming the key) unless ``config`` fits this supernet's weights."""
        if not isinstance(config, SubnetConfig):
            raise ValueError(f"expected a SubnetConfig, got {type(config).__name__}")
        config.check_shape(source="subnet")
        dims = self.dims

        def need(key: str, value: int, limit: int) -> None:
            if value > limit:
                raise ValueError(f"subnet {config.key()}: '{key}' = {value} exceeds the "
                                 f"supernet's {limit}")

        for key in ("encoder_embed_dim", "decoder_embed_dim", "qkv_dim", "encoder_layers",
                    "decoder_layers"):
            need(key, getattr(config, key), getattr(dims, key))
        for side in config.sides():
            routings, limits = self.routings[side.name], dims.side(side.name)
            if not side.is_dense and side.routing not in routings:
                raise ValueError(f"subnet {config.key()}: '{side.name}_routing' = "
                                 f"{side.routing!r} is not one the supernet learned "
                                 f"({list(routings)})")
            for i, experts in enumerate(side.expert_dims):
                need(f"{side.name}_expert_dims[{i}] (experts)", len(experts), limits.experts)
                for h in experts:
                    need(f"{side.name}_expert_dims[{i}]", h, limits.ffn_dim)
                    if h < 1:
                        raise ValueError(f"subnet {config.key()}: '{side.name}_expert_dims[{i}]' "
                                         f"has an expert of size {h}; expected >= 1")
        for i, a in enumerate(config.decoder_ende_attn):
            if not 1 <= a <= core.MAX_ENDE_ATTN:
                raise ValueError(f"subnet {config.key()}: 'decoder_ende_attn[{i}]' = {a}; "
                                 f"expected 1..{core.MAX_ENDE_ATTN}")

    def weights(self, config: SubnetConfig, *, quantize: bool | None = None
                ) -> core.ModelWeights:
        """The subnet's weights: a tree of views (leading slices) of this supernet's
        tensors, in the layout `supernet.core` runs on. Checks ``config`` first.

        With ``quantize`` (default: in eval mode) an expert below 32 bits is a quantized copy
        of its slices (post-training quantization, `supernet.quant`); in training mode every
        expert is fp32: the shared weights train at full precision."""
        self.check(config)
        de, dd, q = config.encoder_embed_dim, config.decoder_embed_dim, config.qkv_dim
        if quantize is None:
            quantize = not self.training
        quantize = quantize and not config.is_full_precision
        enc_bits = config.encoder_expert_bits if quantize else (None,) * config.encoder_layers
        dec_bits = config.decoder_expert_bits if quantize else (None,) * config.decoder_layers
        # nn.ModuleList yields plain Modules to the type checker
        encoder = cast("list[_EncoderLayer]", self.encoder_layers)
        decoder = cast("list[_DecoderLayer]", self.decoder_layers)
        enc_layers = tuple(
            core.EncoderLayerWeights(layer.self_attn.weights(de, de, q), heads,
                                     layer.self_attn_norm.weights(de),
                                     layer.moe.weights(de, dims, k, bits,
                                                       routing=config.encoder_routing),
                                     layer.ffn_norm.weights(de))
            for layer, dims, heads, k, bits in zip(
                encoder, config.encoder_expert_dims, config.encoder_heads,
                config.encoder_top_k, enc_bits, strict=False))
        dec_layers = tuple(
            core.DecoderLayerWeights(
                layer.self_attn.weights(dd, dd, q), heads, layer.self_attn_norm.weights(dd),
                layer.cross_attn.weights(dd, de, q), cross, ende,
                layer.cross_attn_norm.weights(dd),
                layer.moe.weights(dd, dims, k, bits, routing=config.decoder_routing,
                                  route_dim=de if config.decoder_routing == "sentence" else None),
                layer.ffn_norm.weights(dd))
            for layer, dims, heads, cross, ende, k, bits in zip(
                decoder, config.decoder_expert_dims, config.decoder_heads,
                config.decoder_cross_heads, config.decoder_ende_attn, config.decoder_top_k,
                dec_bits, strict=False))
        enc_norm = None if self.encoder_norm is None else self.encoder_norm.weights(de)
        dec_norm = None if self.decoder_norm is None else self.decoder_norm.weights(dd)
        return core.ModelWeights(self.embed[:, : max(de, dd)],
                                 core.StackWeights(enc_layers, enc_norm, de),
                                 core.StackWeights(dec_layers, dec_norm, dd))

    def run_settings(self, config: SubnetConfig, side: int) -> core.Run:
        dim = config.encoder_embed_dim if side == 0 else config.decoder_embed_dim
        return core.run_settings(self.options, dim=dim, side=side, training=self.training,
                                 random_routing=self.random_routing)

    def forward(self, src_tokens: torch.Tensor, prev_tokens: torch.Tensor,
                subnet: SubnetConfig) -> tuple[torch.Tensor, MoEAux]:
        """Teacher-forced forward of ``subnet``: src [B, S], prev [B, T] ->
        (logits [B, T, V], encoder + decoder MoEAux)."""
        weights = self.weights(subnet)
        enc = core.encode(src_tokens, weights, self.run_settings(subnet, 0))
        logits, aux = core.decode(prev_tokens, enc, weights, self.run_settings(subnet, 1))
        return logits, enc.aux + aux

    def bind(self, subnet: SubnetConfig) -> SubnetView:
        """A light view that runs ``subnet`` with the seq2seq protocol (encode / decode /
        new_cache / call); it stores only the (immutable) config."""
        self.check(subnet)
        return SubnetView(self, subnet)

    @torch.no_grad()
    def extract(self, subnet: SubnetConfig) -> Transformer:
        """A static `Transformer` holding copies of exactly ``subnet``'s weights, on this
        supernet's device and dtype, in this supernet's train/eval mode. Experts below 32
        bits hold the quantized copies the supernet scores in eval mode (`QuantExpert`;
        such a model runs in eval mode only)."""
        src = self.weights(subnet, quantize=True)
        model = Transformer(subnet, self.vocab_size, options=self.options)
        model.to(device=self.embed.device, dtype=self.embed.dtype)
        _copy_tree(model.weights(), src, "model")
        return model.train(self.training)

    def count_params(self, config: SubnetConfig) -> ParamCounts:
        """Analytic parameter counts of ``config`` (conventions in `supernet.params`)."""
        self.check(config)
        return count_params(config, self.vocab_size,
                            normalize_before=self.options.normalize_before)


def _copy_tree(dst: Any, src: Any, where: str) -> None:
    """Copies a weight tree into one of the same structure (tensors shape-checked)."""
    if isinstance(dst, torch.Tensor):
        if dst.shape != src.shape:
            raise AssertionError(f"{where}: shape {tuple(dst.shape)} vs {tuple(src.shape)}")
        dst.copy_(src)
    elif isinstance(dst, tuple):
        assert isinstance(src, tuple) and len(src) == len(dst), where
        for i, (d, s) in enumerate(zip(dst, src, strict=True)):
            _copy_tree(d, s, f"{where}.{getattr(dst, '_fields', range(len(dst)))[i]}")
    else:
        assert dst == src, f"{where}: {dst!r} != {src!r}"


class SubnetView:
    """One subnet of a supernet, with the seq2seq protocol of docs/contracts.md (a
    `supernet.contracts.SubnetModel`). Weights are the supernet's (views, resolved at each
    call); train/eval mode is the supernet's."""

    def __init__(self, supernet: SuperTransformer, config: SubnetConfig) -> None:
        self.supernet, self.config = supernet, config

    @property
    def vocab_size(self) -> int:
        return self.supernet.vocab_size

    @property
    def training(self) -> bool:
        return self.supernet.training

    def train(self, mode: bool = True) -> SubnetView:
        self.supernet.train(mode)
        return self

    def eval(self) -> SubnetView:
        return self.train(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.supernet.parameters()

    def encode(self, src_tokens: torch.Tensor) -> EncoderOut:
        """src_tokens [B, S] -> EncoderOut."""
        sn = self.supernet
        return core.encode(src_tokens, sn.weights(self.config), sn.run_settings(self.config, 0))

    def decode(self, prev_tokens: torch.Tensor, enc: EncoderOut,
               cache: DecoderCache | None = None) -> tuple[torch.Tensor, MoEAux]:
        """prev_tokens [B, T] -> (logits [B, T, V], decoder aux); see `core.decode`."""
        sn = self.supernet
        return core.decode(prev_tokens, enc, sn.weights(self.config),
                           sn.run_settings(self.config, 1), cache)

    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    def __call__(self, src_tokens: torch.Tensor, prev_tokens: torch.Tensor
                 ) -> tuple[torch.Tensor, MoEAux]:
        return self.supernet(src_tokens, prev_tokens, self.config)

    def count_params(self) -> ParamCounts:
        return self.supernet.count_params(self.config)
