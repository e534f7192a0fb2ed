"""ONNX export of a static `supernet.Transformer`: an encoder graph and a decoder-step graph.

``export_onnx(model, SUBNET_DIR / "onnx")`` writes (atomically, as one directory):

- ``encoder.onnx``: ``src_tokens`` [B, S] int64 -> ``encoder_states`` [n, B, S, d_enc] (the
  last n = min(3, encoder layers) layer outputs, oldest first: what cross-attention reads)
  and ``padding_mask`` [B, S] bool (True at PAD);
- ``decoder_step.onnx``: ``tokens`` [B, 1] int64 (the last token fed), ``encoder_states``,
  ``padding_mask`` and, per decoder layer i, ``past_key_i`` / ``past_value_i``
  [B, heads_i, L, head_dim] (the self-attention cache of the L tokens fed before; L = 0 at
  the first step) -> ``logits`` [B, 1, V] and ``present_key_i`` / ``present_value_i``
  [B, heads_i, L + 1, head_dim]. The next token's position is L. The cross-attention keys
  and values are computed from ``encoder_states`` at every step (they are not cached).
- ``onnx.json``: the graphs' input and output names, the cache shapes per layer, the number
  of encoder states, the vocabulary size, the opset and the ``architecture_key``.

B, S and L are dynamic. Both graphs run the code the torch model runs (`supernet.core`),
with the MoE's static-shape dispatch (`supernet.functional.static_dispatch`: the index
dispatch sizes its tensors from the routing on the host, which a fixed graph cannot). They
are traced by ``torch.onnx.export(..., dynamo=True)`` (torch >= 2.5; tested with 2.13) and
checked with ``onnx.checker``. Needs the ``onnx`` extra (``pip install 'automoe[onnx]'``).

Only full-precision models are exported: a model with experts below 32 bits is refused
(`check_precision`), since its graph would not run the quantized kernels it was scored with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from automoe.io_utils import atomic_dir, atomic_write_json, read_json
from search_spaces.config import SubnetConfig
from supernet import core
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.transformer import Transformer

__all__ = ["ONNX_FILES", "OPSET", "ONNX_DIR", "require_onnx", "check_precision", "export_onnx",
           "export_subnet_onnx", "read_onnx_meta", "check_onnx_dir"]

ONNX_FILES = ("encoder.onnx", "decoder_step.onnx", "onnx.json")
OPSET = 18
ONNX_DIR = "onnx"  # the graphs' folder inside a model dir
_FORMAT = "automoe-onnx"


def require_onnx() -> None:
    """ValueError saying what to install when onnx, onnxscript or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'automoe[onnx]'")


def _static(run: core.Run) -> core.Run:
    return run._replace(dispatch="static")


class _Encoder(nn.Module):
    """src_tokens [B, S] -> (encoder_states [n, B, S, d], padding_mask [B, S])."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = core.encode(src_tokens, self.model.weights(), _static(self.model._run(0)))
        return torch.stack(enc.states), enc.padding_mask


class _DecoderStep(nn.Module):
    """One cached decoder step: tokens [B, 1], encoder states, padding mask and the
    self-attention cache (past_key_0, past_value_0, ...) -> (logits [B, 1, V], present
    keys/values, each one position longer)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, encoder_states: torch.Tensor,
                padding_mask: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zero = torch.zeros((), dtype=torch.float32)
        enc = EncoderOut(tuple(encoder_states.unbind(0)), padding_mask, MoEAux(zero, zero))
        cache = DecoderCache(length=past[0].shape[2])
        cache.self_kv = {i: (past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)}
        logits, _ = core.decode(tokens, enc, self.model.weights(), _static(self.model._run(1)),
                                cache)
        present = [t for i in range(len(past) // 2) for t in cache.self_kv[i]]
        return (logits, *present)


def _cache_shapes(model: Transformer) -> list[tuple[int, int]]:
    """(heads, head_dim) of each decoder layer's self-attention cache."""
    cfg = model.config
    return [(h, cfg.qkv_dim // h) for h in cfg.decoder_heads]


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValueError(f"{path}: the exported graph fails onnx.checker ({err})") from None


def check_precision(config: SubnetConfig, *, source: str) -> None:
    """ValueError naming the bits unless every expert of ``config`` is at 32 bits."""
    core.check_full_precision(config, source=source,
                              reason="ONNX export runs experts at 32 bits only (the quantized "
                                     "kernels are not exported); use the torch runtime")


def export_onnx(model: Transformer, out: str | Path, *, overwrite: bool = False) -> Path:
    """Writes ``encoder.onnx``, ``decoder_step.onnx`` and ``onnx.json`` (module docstring)
    into the directory ``out``, atomically; returns ``out``. The model must be fp32 (a
    low-precision model is refused: its graph would not be the model that was scored)."""
    check_precision(model.config, source=f"ONNX export of subnet {model.config.key()}")
    require_onnx()
    if model.embed.dtype != torch.float32:
        raise ValueError(f"ONNX export needs an fp32 model, got {model.embed.dtype}")
    model = model.eval()
    cfg = model.config
    n_states = min(core.MAX_ENDE_ATTN, len(cfg.encoder_expert_dims))
    cache = _cache_shapes(model)
    b, s, past_len = 2, 5, 3  # example sizes; >= 2 so the tracer keeps them symbolic
    src = torch.full((b, s), 4, dtype=torch.long)
    src[:, -1] = 3
    batch = torch.export.Dim("batch", min=1, max=4096)
    src_len = torch.export.Dim("src_len", min=1, max=model.options.max_positions)
    past = torch.export.Dim("past_len", min=0, max=model.options.max_positions - 1)
    past_names = [f"past_{kv}_{i}" for i in range(len(cache)) for kv in ("key", "value")]
    present_names = [n.replace("past_", "present_") for n in past_names]
    encoder, step = _Encoder(model).eval(), _DecoderStep(model).eval()
    with torch.no_grad():
        states, mask = encoder(src)
    pasts = [torch.zeros(b, h, past_len, hd) for h, hd in cache for _ in range(2)]
    tokens = torch.full((b, 1), 5, dtype=torch.long)
    encoder_io = {"inputs": ["src_tokens"], "outputs": ["encoder_states", "padding_mask"]}
    step_io = {"inputs": ["tokens", "encoder_states", "padding_mask", *past_names],
               "outputs": ["logits", *present_names]}
    def save(program: torch.onnx.ONNXProgram | None, path: Path) -> None:
        if program is None:  # only the legacy (dynamo=False) exporter returns None
            raise RuntimeError(f"torch.onnx.export returned no program for {path.name}")
        program.save(str(path))

    with atomic_dir(out, overwrite=overwrite) as tmp, torch.no_grad():
        program = torch.onnx.export(
            encoder, (src,), dynamo=True, opset_version=OPSET,
            input_names=encoder_io["inputs"], output_names=encoder_io["outputs"],
            dynamic_shapes=({0: batch, 1: src_len},), verbose=False)
        save(program, tmp / "encoder.onnx")
        kv = {0: batch, 2: past}
        program = torch.onnx.export(
            step, (tokens, states, mask, *pasts), dynamo=True,
            opset_version=OPSET, input_names=step_io["inputs"],
            output_names=step_io["outputs"],
            dynamic_shapes=({0: batch}, {1: batch, 2: src_len}, {0: batch, 1: src_len},
                            tuple(kv for _ in pasts)), verbose=False)
        save(program, tmp / "decoder_step.onnx")
        for name in ONNX_FILES[:2]:
            _check(tmp / name)
        atomic_write_json(tmp / "onnx.json", {
            "format": _FORMAT, "format_version": 1, "opset": OPSET,
            "architecture_key": cfg.key(), "vocab_size": model.vocab_size,
            "encoder_states": n_states, "decoder_layers": len(cache),
            "cache": [{"heads": h, "head_dim": hd} for h, hd in cache],
            "encoder": encoder_io, "decoder_step": step_io})
    return Path(out)


def export_subnet_onnx(model_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Exports the model dir ``model_dir`` (`Transformer.save`, e.g. written by automoe
    export) into ``model_dir/onnx``; returns that folder. ValueError if it exists and
    ``overwrite`` is False."""
    require_onnx()
    out = Path(model_dir) / ONNX_DIR
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists (pass --overwrite to replace it)")
    return export_onnx(Transformer.load(model_dir), out, overwrite=True)


def read_onnx_meta(directory: str | Path) -> dict[str, Any]:
    """``onnx.json`` of an ONNX dir; FileNotFoundError / ValueError naming the file."""
    path = Path(directory) / "onnx.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write it with automoe onnx SUBNET_DIR")
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an {_FORMAT} description (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


def check_onnx_dir(directory: str | Path) -> dict[str, Any]:
    """Checks that ``directory`` holds both graphs, readable and valid (``onnx.checker``);
    returns ``onnx.json``. FileNotFoundError / ValueError naming the bad file."""
    meta = read_onnx_meta(directory)
    for name in ONNX_FILES[:2]:
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export it with automoe onnx")
        try:
            _check(path)
        except ValueError:
            raise
        except Exception as err:  # a truncated or foreign file fails while parsing
            raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__}: "
                             f"{err})") from None
    return meta
