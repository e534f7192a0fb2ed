"""`Transformer`: the plain (static) encoder-decoder MoE Transformer of one `SubnetConfig`.

What `SuperTransformer.extract` returns and what a retrained subnet is: ordinary modules
(`nn.Linear`, `nn.LayerNorm`), every expert with its own tensors, no slicing and no elastic
code. It runs the same functions as the supernet (`supernet.core`), so an extracted model
computes exactly what the supernet computed for that subnet.

An expert below 32 bits is a `QuantExpert`: its two matrices are `QuantLinear`s holding the
quantized integers and per-output-channel fp32 scales (`supernet.quant`), run by the same
kernel functions as the supernet's eval-mode scoring. Such a model runs in eval mode only.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from torch import nn

from search_spaces.config import SubnetConfig
from supernet import core, model_dir
from supernet.functional import AttnWeights, ExpertWeights, MoEWeights, NormWeights
from supernet.options import DEFAULT_OPTIONS, ModelOptions
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.params import ParamCounts
from supernet.quant import (
    QUANT_BITS,
    QuantizedExpert,
    QuantizedWeight,
    pack_int4,
    quantize_weight,
    unpack_int4,
)
from supernet.tokens import PAD_ID

__all__ = ["Transformer", "QuantLinear", "QuantExpert", "init_generator"]


def init_generator(seed: int) -> torch.Generator:
    """The explicit generator that weight initialisation draws from."""
    return torch.Generator().manual_seed(int(seed))


def _norm(d: int) -> nn.LayerNorm:
    return nn.LayerNorm(d, device="meta")


def _linear(d_in: int, d_out: int, *, bias: bool = True) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias, device="meta")


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections."""

    def __init__(self, *, q_in: int, kv_in: int, qkv: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = _linear(q_in, qkv), _linear(kv_in, qkv)
        self.v_proj, self.out_proj = _linear(kv_in, qkv), _linear(qkv, q_in)

    def weights(self) -> AttnWeights:
        return AttnWeights(self.q_proj.weight, self.q_proj.bias, self.k_proj.weight,
                           self.k_proj.bias, self.v_proj.weight, self.v_proj.bias,
                           self.out_proj.weight, self.out_proj.bias)


class Expert(nn.Module):
    """A ReLU FFN d -> hidden -> d."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = _linear(d, hidden), _linear(hidden, d)

    def weights(self) -> ExpertWeights:
        return ExpertWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)


class QuantLinear(nn.Module):
    """A weight-only quantized linear layer ``d_in -> d_out`` at ``bits`` (8 or 4).

    Holds the buffers ``qweight`` [d_out, d_in] int8 (int4 values, one per byte, at 4 bits)
    and ``scale`` [d_out] fp32 (`supernet.quant.quantize_weight`), and the parameter
    ``bias`` [d_out]. Its state dict, and so its file, holds 4-bit weights packed two per
    byte: ``qweight`` uint8 [d_out, ceil(d_in / 2)] (`supernet.quant.pack_int4`).
    """

    qweight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, d_in: int, d_out: int, bits: int) -> None:
        super().__init__()
        if bits not in QUANT_BITS:
            raise ValueError(f"QuantLinear: bits must be one of {list(QUANT_BITS)}, got {bits!r}")
        self.in_features, self.out_features, self.bits = d_in, d_out, bits
        self.register_buffer("qweight", torch.empty(d_out, d_in, dtype=torch.int8,
                                                    device="meta"))
        self.register_buffer("scale", torch.empty(d_out, device="meta"))
        self.bias = nn.Parameter(torch.empty(d_out, device="meta"))

    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.qweight, self.scale, self.bits)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """The quantization of what `nn.Linear` would draw from ``generator`` (xavier-uniform
        weight, zero bias): the same draws, so a model's fp32 and quantized experts of one
        seed agree up to rounding."""
        w = torch.empty(self.out_features, self.in_features)
        nn.init.xavier_uniform_(w, generator=generator)
        q = quantize_weight(w, self.bits)
        self.qweight.copy_(q.q)
        self.scale.copy_(q.scale)
        nn.init.zeros_(self.bias)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.bits == 4:
            destination[prefix + "qweight"] = pack_int4(self.qweight)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        key = prefix + "qweight"
        if self.bits == 4 and key in state_dict:
            packed = state_dict[key]
            want = (self.out_features, -(-self.in_features // 2))
            if packed.dtype != torch.uint8 or tuple(packed.shape) != want:
                error_msgs.append(f"{key}: expected 4-bit values packed as uint8 {list(want)}, "
                                  f"got {packed.dtype} {list(packed.shape)}")
                return
            state_dict[key] = unpack_int4(packed, self.in_features)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


class QuantExpert(nn.Module):
    """A ReLU FFN d -> hidden -> d with both matrices quantized at ``bits`` (eval only)."""

    def __init__(self, d: int, hidden: int, bits: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = QuantLinear(d, hidden, bits), QuantLinear(hidden, d, bits)

    def weights(self) -> QuantizedExpert:
        return QuantizedExpert(self.fc1.quantized(), self.fc1.bias, self.fc2.quantized(),
                               self.fc2.bias)


class MoE(nn.Module):
    """Top-k mixture of experts of the given hidden sizes and precisions; one expert = a
    dense FFN (no router). The router reads ``routing``'s input of width ``route_dim``
    (default d; a sentence-routed decoder layer reads the encoder's width)."""

    def __init__(self, d: int, dims: tuple[int, ...], top_k: int,
                 bits: tuple[int, ...] | None = None, *, routing: str = "token",
                 route_dim: int | None = None) -> None:
        super().__init__()
        self.top_k, self.routing = top_k, routing
        self.router = _linear(route_dim or d, len(dims)) if len(dims) > 1 else None
        bits = (32,) * len(dims) if bits is None else bits  # None: every expert fp32
        self.experts = nn.ModuleList(Expert(d, h) if b == 32 else QuantExpert(d, h, b)
                                     for h, b in zip(dims, bits, strict=True))

    def weights(self) -> MoEWeights:
        r = self.router
        experts = cast("list[Expert | QuantExpert]", self.experts)  # ModuleList: plain Modules
        return MoEWeights(None if r is None else r.weight, None if r is None else r.bias,
                          tuple(e.weights() for e in experts), self.top_k, self.routing)


def _nw(norm: nn.LayerNorm) -> NormWeights:
    return NormWeights(norm.weight, norm.bias)


class EncoderLayer(nn.Module):
    def __init__(self, *, d: int, qkv: int, heads: int, dims: tuple[int, ...], top_k: int,
                 bits: tuple[int, ...], routing: str = "token"):
        super().__init__()
        self.self_attn = Attention(q_in=d, kv_in=d, qkv=qkv, heads=heads)
        self.self_attn_norm = _norm(d)
        self.moe, self.ffn_norm = MoE(d, dims, top_k, bits, routing=routing), _norm(d)

    def weights(self) -> core.EncoderLayerWeights:
        return core.EncoderLayerWeights(self.self_attn.weights(), self.self_attn.heads,
                                        _nw(self.self_attn_norm), self.moe.weights(),
                                        _nw(self.ffn_norm))


class DecoderLayer(nn.Module):
    def __init__(self, *, d: int, d_enc: int, qkv: int, heads: int, cross_heads: int,
                 ende_attn: int, dims: tuple[int, ...], top_k: int,
                 bits: tuple[int, ...], routing: str = "token") -> None:
        super().__init__()
        self.ende_attn = ende_attn
        self.self_attn = Attention(q_in=d, kv_in=d, qkv=qkv, heads=heads)
        self.self_attn_norm = _norm(d)
        self.cross_attn = Attention(q_in=d, kv_in=d_enc, qkv=qkv, heads=cross_heads)
        self.cross_attn_norm = _norm(d)
        self.moe = MoE(d, dims, top_k, bits, routing=routing,
                       route_dim=d_enc if routing == "sentence" else None)
        self.ffn_norm = _norm(d)

    def weights(self) -> core.DecoderLayerWeights:
        return core.DecoderLayerWeights(
            self.self_attn.weights(), self.self_attn.heads, _nw(self.self_attn_norm),
            self.cross_attn.weights(), self.cross_attn.heads, self.ende_attn,
            _nw(self.cross_attn_norm), self.moe.weights(), _nw(self.ffn_norm))


class Transformer(nn.Module):
    """A static encoder-decoder (MoE) Transformer of one architecture.

    Args:
        config: the architecture.
        vocab_size: size of the joint source/target vocabulary (shared, tied embedding).
        options: dropout, layer-norm placement, positions, routing noise.
        seed: weight initialisation seed (an explicit generator; the global RNG is untouched).
        device: "cpu" (the default), or "meta": parameters without memory and never
            initialised, for shape checks (`load` checks a file against them).

    Follows the seq2seq protocol of docs/contracts.md: ``encode``, ``decode``,
    ``new_cache``, ``forward(src, prev) -> (logits, aux)`` (a `supernet.contracts.SubnetModel`).
    """

    def __init__(self, config: SubnetConfig, vocab_size: int, *,
                 options: ModelOptions = DEFAULT_OPTIONS, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__()
        if device not in ("cpu", "meta"):
            raise ValueError(f"Transformer is built on 'cpu' (or 'meta': shapes without "
                             f"memory, nothing initialised), got {device!r}; move it after")
        config.check_shape(source="Transformer config")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
            raise ValueError(f"vocab_size must be an integer >= 5 (4 special tokens + words), got "
                             f"{vocab_size!r}")
        self.config, self.vocab_size, self.options = config, vocab_size, options
        de, dd, q = config.encoder_embed_dim, config.decoder_embed_dim, config.qkv_dim
        options.check_positions(max(de, dd), source="Transformer")
        self.embed = nn.Parameter(torch.empty(vocab_size, max(de, dd), device="meta"))
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d=de, qkv=q, heads=h, dims=dims, top_k=k, bits=bits,
                         routing=config.encoder_routing)
            for dims, h, k, bits in zip(config.encoder_expert_dims, config.encoder_heads,
                                        config.encoder_top_k, config.encoder_expert_bits,
                                        strict=True))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d=dd, d_enc=de, qkv=q, heads=h, cross_heads=ch, ende_attn=a, dims=dims,
                         top_k=k, bits=bits, routing=config.decoder_routing)
            for dims, h, ch, a, k, bits in zip(
                config.decoder_expert_dims, config.decoder_heads, config.decoder_cross_heads,
                config.decoder_ende_attn, config.decoder_top_k, config.decoder_expert_bits,
                strict=True))
        self.encoder_norm = _norm(de) if options.normalize_before else None
        self.decoder_norm = _norm(dd) if options.normalize_before else None
        if device == "cpu":
            self.to_empty(device="cpu")
            self.reset_parameters(init_generator(seed))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """fairseq's init: xavier-uniform linear weights, zero biases, unit layer norms,
        embeddings N(0, d^-1/2) with a zero padding row; quantized experts hold the
        quantization of the same draws."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, QuantLinear):
                module.reset_parameters(generator)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed, std=self.embed.shape[1] ** -0.5, generator=generator)
        self.embed[PAD_ID].zero_()

    # ---- the seq2seq protocol ----------------------------------------------------------

    def weights(self) -> core.ModelWeights:
        """This model's tensors as the tree `supernet.core` runs on."""
        cfg = self.config
        # nn.ModuleList yields plain Modules to the type checker
        encoder = cast("list[EncoderLayer]", self.encoder_layers)
        decoder = cast("list[DecoderLayer]", self.decoder_layers)
        enc = core.StackWeights(tuple(layer.weights() for layer in encoder),
                                None if self.encoder_norm is None else _nw(self.encoder_norm),
                                cfg.encoder_embed_dim)
        dec = core.StackWeights(tuple(layer.weights() for layer in decoder),
                                None if self.decoder_norm is None else _nw(self.decoder_norm),
                                cfg.decoder_embed_dim)
        return core.ModelWeights(self.embed, enc, dec)

    def _run(self, side: int) -> core.Run:
        dim = self.config.encoder_embed_dim if side == 0 else self.config.decoder_embed_dim
        return core.run_settings(self.options, dim=dim, side=side, training=self.training)

    def encode(self, src_tokens: torch.Tensor) -> EncoderOut:
        """src_tokens [B, S] -> EncoderOut."""
        return core.encode(src_tokens, self.weights(), self._run(0))

    def decode(self, prev_tokens: torch.Tensor, enc: EncoderOut,
               cache: DecoderCache | None = None) -> tuple[torch.Tensor, MoEAux]:
        """prev_tokens [B, T] -> (logits [B, T, V], decoder aux); see `core.decode`."""
        return core.decode(prev_tokens, enc, self.weights(), self._run(1), cache)

    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    def forward(self, src_tokens: torch.Tensor, prev_tokens: torch.Tensor
                ) -> tuple[torch.Tensor, MoEAux]:
        """Teacher-forced forward: src [B, S], prev [B, T] -> (logits [B, T, V], aux)."""
        enc = self.encode(src_tokens)
        logits, aux = self.decode(prev_tokens, enc)
        return logits, enc.aux + aux

    # ---- sizes and files ---------------------------------------------------------------

    def count_params(self) -> ParamCounts:
        """Counts from the actual tensors (conventions in `supernet.params`; a quantized
        weight counts its values, not its scales)."""
        total = _numel(self)
        active = float(total)
        for layer in [*self.encoder_layers, *self.decoder_layers]:
            moe = layer.moe
            experts = _numel(moe.experts)
            active -= experts * (1.0 - moe.top_k / len(moe.experts))
        embedding = self.embed.numel()
        return ParamCounts(total=total, active=active, hat=total - embedding,
                           embedding=embedding)

    def save(self, directory: str | Path, *, overwrite: bool = False,
             extra: dict | None = None) -> Path:
        """Writes ``config.json`` + ``model.safetensors`` into ``directory`` atomically
        (format in `supernet.model_dir`); ``extra`` is free JSON metadata."""
        return model_dir.write_model_dir(
            directory, config=self.config, vocab_size=self.vocab_size, options=self.options,
            state=self.state_dict(), dtype=self.embed.dtype, overwrite=overwrite, extra=extra)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Transformer:
        """Loads a directory written by `save` (on ``device``, in the saved dtype, eval mode);
        ValueError naming the file if it is bad."""
        config, vocab, options = model_dir.read_model_config(directory)
        expected = cls(config, vocab, options=options, device="meta").state_dict()
        state = model_dir.read_model_weights(
            directory, {k: tuple(v.shape) for k, v in expected.items()},
            integer={k: v.dtype for k, v in expected.items() if not v.is_floating_point()})
        model = cls(config, vocab, options=options)
        model.to(dtype=state["embed"].dtype)
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

    def extra_repr(self) -> str:
        return f"config={self.config.key()}, vocab_size={self.vocab_size}"


def _numel(module: nn.Module) -> int:
    """Parameters of ``module``, quantized weights included (buffers of `QuantLinear`)."""
    quantized = sum(m.qweight.numel() for m in module.modules() if isinstance(m, QuantLinear))
    return sum(p.numel() for p in module.parameters()) + quantized
