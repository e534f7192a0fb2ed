"""ONNX export of a static `supernet.Transformer`: an encoder graph and a decoder-step graph.

``export_onnx(model, SUBNET_DIR / "onnx")`` writes (atomically, as one directory):

- ``encoder.onnx``: ``src_tokens`` [B, S] int64 -> ``padding_mask`` [B, S] bool (True at
  PAD) and, per decoder layer i, ``cross_key_i`` / ``cross_value_i``
  [B, cross_heads_i, span_i·S, head_dim]: the cross-attention keys and values of the last
  span_i = min(ende_attn_i, encoder layers) encoder outputs, computed once per source, as
  torch's decoder cache holds them after its first step;
- ``decoder_step.onnx``: ``tokens`` [B, 1] int64 (the last token fed), ``padding_mask``,
  the cross keys/values and, per decoder layer i, ``past_key_i`` / ``past_value_i``
  [B, heads_i, L, head_dim] (the self-attention cache of the L tokens fed before; L = 0 at
  the first step) -> ``logits`` [B, 1, V] and ``present_key_i`` / ``present_value_i``
  [B, heads_i, L + 1, head_dim]. The next token's position is L.
- ``onnx.json``: the graphs' input and output names, the self- and cross-attention cache
  shapes per layer, the vocabulary size, the opset, the ``architecture_key`` (also in each
  graph's own metadata) and each graph's sha256.

`check_onnx_dir` trusts nothing in the directory: the manifest is validated field by field,
each graph must match its sha256, metadata, names and static sizes, and against a model
dir's ``config.json`` the manifest must describe that architecture. Initializer shapes are
not compared: the exporter folds and duplicates initializers (the tied embedding appears in
both graphs, biases fold into constants), so they are no stable fingerprint.

B, S and L are dynamic. Both graphs run the code the torch model runs (`supernet.core`),
with the MoE's gather dispatch (`supernet.functional.gather_dispatch`: each expert gathers
its tokens with ``NonZero`` and runs on them alone, where the index dispatch reads sizes
on the host, which a graph cannot). They
are traced by ``torch.onnx.export(..., dynamo=True)`` (torch >= 2.5; tested with 2.13) and
checked with ``onnx.checker``. Needs the ``onnx`` extra (``pip install 'automoe[onnx]'``).

Quantized experts export too. int8 ones trace `supernet.quant.onnx_int8_linear` into
ONNX's dynamic int8 arithmetic (``DynamicQuantizeLinear`` on the activations, then
``MatMulInteger`` with the int8 weights held as uint8 with zero point 128, since ONNX
Runtime's u8s8 kernels saturate on CPUs without VNNI, then both scales), which ONNX Runtime
fuses into its dynamic-quantization matmul; the torch model on kernel ``"onnx"`` computes
the same. int4 experts run the same way: their 4-bit values are held one per byte (the
graph has no 4-bit type at opset 18), so in ONNX they cost the bytes and time of int8.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from automoe.io_utils import atomic_dir, atomic_write_json, file_sha256, read_json
from search_spaces.config import SubnetConfig
from supernet import core
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.transformer import Transformer

__all__ = ["ONNX_FILES", "OPSET", "MOE_DISPATCH", "ONNX_DIR", "require_onnx", "export_onnx",
           "export_subnet_onnx", "read_onnx_meta", "check_onnx_dir", "cache_shapes",
           "ARCHITECTURE_PROP"]

ONNX_FILES = ("encoder.onnx", "decoder_step.onnx", "onnx.json")
OPSET = 18
ONNX_DIR = "onnx"  # the graphs' folder inside a model dir
_FORMAT = "automoe-onnx"
# 4: each graph's metadata holds the architecture key; 3: onnx.json holds each graph's
# sha256 and max_positions; 2: cross-attention keys/values from the encoder graph (1:
# recomputed per step)
FORMAT_VERSION = 4
# How the graphs run MoE layers (`supernet.functional.moe_ffn`): part of ``onnx.json`` and of
# ONNX Runtime latency fingerprints, since it sets the graphs' speed (earlier exports ran
# every expert on every token, "static").
MOE_DISPATCH = "gather"


def require_onnx() -> None:
    """ValueError saying what to install when onnx, onnxscript or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'automoe[onnx]'")


def _exported(run: core.Run) -> core.Run:
    return run._replace(dispatch=MOE_DISPATCH)


class _Encoder(nn.Module):
    """src_tokens [B, S] -> (padding_mask [B, S], cross_key_0, cross_value_0, ...)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        weights = self.model.weights()
        enc = core.encode(src_tokens, weights, _exported(self.model._run(0)))
        return (enc.padding_mask, *[t for kv in core.cross_kv(enc, weights) for t in kv])


class _DecoderStep(nn.Module):
    """One cached decoder step: tokens [B, 1], the padding mask, the cross keys/values
    (``n`` decoder layers) and the self-attention cache (past_key_0, past_value_0, ...) ->
    (logits [B, 1, V], present keys/values, each one position longer)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.n = len(model.config.decoder_heads)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.n
        cross, past = kv[:2 * n], kv[2 * n:]
        zero = torch.zeros((), dtype=torch.float32)
        enc = EncoderOut((), padding_mask, MoEAux(zero, zero))  # the decoder reads the cache
        cache = DecoderCache(length=past[0].shape[2])
        cache.self_kv = {i: (past[2 * i], past[2 * i + 1]) for i in range(n)}
        cache.cross_kv = {i: (cross[2 * i], cross[2 * i + 1]) for i in range(n)}
        logits, _ = core.decode(tokens, enc, self.model.weights(), _exported(self.model._run(1)),
                                cache)
        present = [t for i in range(n) for t in cache.self_kv[i]]
        return (logits, *present)


def cache_shapes(cfg: SubnetConfig) -> list[dict[str, int]]:
    """Per decoder layer of ``cfg``: heads and head_dim of its self-attention cache, and
    cross_heads, cross_head_dim and span (encoder outputs concatenated along time) of its
    cross one: what ``onnx.json``'s ``cache`` says and the graphs' cache inputs are."""
    n_states = min(core.MAX_ENDE_ATTN, len(cfg.encoder_heads))
    return [{"heads": h, "head_dim": cfg.qkv_dim // h, "cross_heads": ch,
             "cross_head_dim": cfg.qkv_dim // ch, "span": min(a, n_states)}
            for h, ch, a in zip(cfg.decoder_heads, cfg.decoder_cross_heads,
                                cfg.decoder_ende_attn, strict=True)]


ARCHITECTURE_PROP = "automoe.architecture_key"  # graph metadata: the config the graph is of


def _stamp(path: Path, key: str) -> None:
    """Records the architecture key in the graph's own metadata (``metadata_props``)."""
    import onnx

    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {ARCHITECTURE_PROP: key})
    onnx.save(graph, str(path))


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValueError(f"{path}: the exported graph fails onnx.checker "
                         f"({' '.join(str(err).split())})") from None


def _onnx_int8_linear(x: Any, q: Any, scale: Any, bias: Any) -> Any:
    """The ONNX graph of `supernet.quant.onnx_int8_linear`: x [..., in], q [out, in] int8."""
    from onnx import TensorProto, helper
    from onnxscript import opset18 as op

    def scalar(dtype: int, value: int) -> Any:
        return op.Constant(value=helper.make_tensor("c", dtype, [], [value]))

    xq, x_scale, x_zero = op.DynamicQuantizeLinear(x)
    # int8 + 128 as uint8 with zero point 128: ORT's u8u8 kernel is exact on every x86 CPU
    # (its u8s8 one saturates 16-bit sums without VNNI). ORT folds this into a constant.
    wq = op.Cast(op.Add(op.Cast(op.Transpose(q, perm=[1, 0]), to=TensorProto.INT16),
                        scalar(TensorProto.INT16, 128)), to=TensorProto.UINT8)
    acc = op.MatMulInteger(xq, wq, x_zero, scalar(TensorProto.UINT8, 128))
    return op.Add(op.Mul(op.Cast(acc, to=TensorProto.FLOAT), op.Mul(x_scale, scale)), bias)


def export_onnx(model: Transformer, out: str | Path, *, overwrite: bool = False) -> Path:
    """Writes ``encoder.onnx``, ``decoder_step.onnx`` and ``onnx.json`` (module docstring)
    into the directory ``out``, atomically; returns ``out``. The model holds fp32 weights
    (experts may be quantized, module docstring)."""
    require_onnx()
    if model.embed.dtype != torch.float32:
        raise ValueError(f"ONNX export needs an fp32 model, got {model.embed.dtype}")
    model = model.eval()
    cfg = model.config
    if cfg.decoder_routing != "token":  # the decoder-step graph sees no source but its cache
        raise ValueError(f"ONNX export of a {cfg.decoder_routing}-routed decoder is not "
                         "supported (the decoder-step graph reads only the cached keys and "
                         "values); export one task's subnet instead (`automoe export --task`), "
                         "whose decoder is dense")
    cache = cache_shapes(cfg)
    b, s, past_len = 2, 5, 3  # example sizes; >= 2 so the tracer keeps them symbolic
    src = torch.full((b, s), 4, dtype=torch.long)
    src[:, -1] = 3
    batch = torch.export.Dim("batch", min=1, max=4096)
    src_len = torch.export.Dim("src_len", min=1, max=model.options.max_positions)
    past = torch.export.Dim("past_len", min=0, max=model.options.max_positions - 1)
    layers = range(len(cache))
    cross_names = [f"cross_{kv}_{i}" for i in layers for kv in ("key", "value")]
    past_names = [f"past_{kv}_{i}" for i in layers for kv in ("key", "value")]
    present_names = [n.replace("past_", "present_") for n in past_names]
    encoder, step = _Encoder(model).eval(), _DecoderStep(model).eval()
    with torch.no_grad():
        mask, *cross = encoder(src)
    pasts = [torch.zeros(b, c["heads"], past_len, c["head_dim"]) for c in cache for _ in range(2)]
    tokens = torch.full((b, 1), 5, dtype=torch.long)
    encoder_io = {"inputs": ["src_tokens"], "outputs": ["padding_mask", *cross_names]}
    step_io = {"inputs": ["tokens", "padding_mask", *cross_names, *past_names],
               "outputs": ["logits", *present_names]}
    # a cross cache spans span·S keys: a multiple of the one source length
    cross_dims = [{0: batch, 2: src_len if c["span"] == 1 else c["span"] * src_len}
                  for c in cache for _ in range(2)]

    def save(program: torch.onnx.ONNXProgram | None, path: Path) -> None:
        if program is None:  # only the legacy (dynamo=False) exporter returns None
            raise RuntimeError(f"torch.onnx.export returned no program for {path.name}")
        program.save(str(path))

    table: dict[Callable[..., Any], Callable[..., Any]] = {
        torch.ops.automoe.onnx_int8_linear.default: _onnx_int8_linear}
    with atomic_dir(out, overwrite=overwrite) as tmp, torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            encoder, (src,), dynamo=True, opset_version=OPSET, custom_translation_table=table,
            input_names=encoder_io["inputs"], output_names=encoder_io["outputs"],
            dynamic_shapes=({0: batch, 1: src_len},), verbose=False)
        save(program, tmp / "encoder.onnx")
        kv = {0: batch, 2: past}
        program = torch.onnx.export(
            step, (tokens, mask, *cross, *pasts), dynamo=True, custom_translation_table=table,
            opset_version=OPSET, input_names=step_io["inputs"],
            output_names=step_io["outputs"],
            dynamic_shapes=({0: batch}, {0: batch, 1: src_len},
                            (*cross_dims, *(kv for _ in pasts))), verbose=False)
        save(program, tmp / "decoder_step.onnx")
        for name in ONNX_FILES[:2]:
            _stamp(tmp / name, cfg.key())
            _check(tmp / name)
        atomic_write_json(tmp / "onnx.json", {
            "sha256": {name: file_sha256(tmp / name) for name in ONNX_FILES[:2]},
            "format": _FORMAT, "format_version": FORMAT_VERSION, "opset": OPSET,
            "moe_dispatch": MOE_DISPATCH, "architecture_key": cfg.key(),
            "vocab_size": model.vocab_size, "max_positions": model.options.max_positions,
            "decoder_layers": len(cache), "cache": cache,
            "encoder": encoder_io, "decoder_step": step_io})
    return Path(out)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's exporter narrates its steps on stdout ("[torch.onnx] Obtain model
    graph...") and warns about what is expected here (axis names merged because several
    inputs share a dynamic dimension, a deprecated pytree call inside torch): a successful
    export says nothing; a failing one still raises its error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)",
                                category=FutureWarning)
        with contextlib.redirect_stdout(io.StringIO()):
            yield


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
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, this version "
                         f"reads {FORMAT_VERSION}; re-export with automoe onnx MODEL_DIR "
                         "--overwrite")
    _check_meta(meta, path)
    return meta


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """Field by field: every key the runtime reads, its type and range, and the graph
    inputs and outputs the cache description implies; ValueError naming file and key."""
    def fail(key: str, want: str) -> NoReturn:
        got = meta.get(key, "<missing>") if "." not in key else "<as found>"
        raise ValueError(f"{path}: {key!r} must be {want}, got {got!r}")

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    key = meta.get("architecture_key")
    if not (isinstance(key, str) and len(key) == 16
            and all(c in "0123456789abcdef" for c in key)):
        fail("architecture_key", "16 hex digits")
    if not positive_int(meta.get("vocab_size")) or meta["vocab_size"] < 5:
        fail("vocab_size", "an integer >= 5")
    if "max_positions" in meta and not positive_int(meta["max_positions"]):
        fail("max_positions", "an integer >= 1")
    cache = meta.get("cache")
    if not isinstance(cache, list) or not cache:
        fail("cache", "a non-empty list (one entry per decoder layer)")
    for i, c in enumerate(cache):
        fields = ("heads", "head_dim", "cross_heads", "cross_head_dim", "span")
        if not isinstance(c, dict) or not all(positive_int(c.get(k)) for k in fields):
            raise ValueError(f"{path}: 'cache[{i}]' must hold integers >= 1 for "
                             f"{', '.join(fields)}, got {c!r}")
    if meta.get("decoder_layers") != len(cache):
        fail("decoder_layers", f"the number of cache entries ({len(cache)})")
    layers = range(len(cache))
    cross = [f"cross_{kv}_{i}" for i in layers for kv in ("key", "value")]
    past = [f"past_{kv}_{i}" for i in layers for kv in ("key", "value")]
    want = {"encoder": {"inputs": ["src_tokens"], "outputs": ["padding_mask", *cross]},
            "decoder_step": {"inputs": ["tokens", "padding_mask", *cross, *past],
                             "outputs": ["logits",
                                         *(n.replace("past_", "present_") for n in past)]}}
    for graph, names in want.items():
        if meta.get(graph) != names:
            raise ValueError(f"{path}: {graph!r} must name the graph's inputs and outputs "
                             f"{names}, got {meta.get(graph)!r}")
    hashes = meta.get("sha256")
    if not (isinstance(hashes, dict) and set(hashes) == set(ONNX_FILES[:2]) and all(
            isinstance(h, str) and len(h) == 64 for h in hashes.values())):
        fail("sha256", f"the sha256 of each graph ({', '.join(ONNX_FILES[:2])})")


def check_onnx_dir(directory: str | Path, config: SubnetConfig | None = None,
                   *, config_file: str | Path = "config.json") -> dict[str, Any]:
    """Checks that ``directory`` holds both graphs, readable and valid (``onnx.checker``),
    that they are the ones ``onnx.json`` describes (sha256, the architecture key in each
    graph's metadata, input and output names, the cache inputs' and outputs' static sizes,
    the logits' vocabulary) and, with ``config`` (the model dir's, read from
    ``config_file``), that ``onnx.json`` describes that architecture (key and cache sizes);
    returns ``onnx.json``. FileNotFoundError / ValueError naming the bad file."""
    meta = read_onnx_meta(directory)
    if config is not None:
        _check_config(meta, config, Path(directory) / "onnx.json", config_file)
    root = Path(directory).resolve()
    for name, graph in zip(ONNX_FILES[:2], ("encoder", "decoder_step"), strict=True):
        path = Path(directory) / name
        if path.is_symlink() or (path.exists() and path.resolve().parent != root):
            raise ValueError(f"{path}: a link; the graphs must be regular files inside "
                             f"{directory}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export it with automoe onnx")
        if file_sha256(path) != meta["sha256"][name]:
            raise ValueError(f"{path}: not the graph onnx.json describes (sha256 differs): "
                             "graphs of another export? re-export with automoe onnx "
                             "--overwrite")
        try:
            _check(path)
            _check_graph(path, graph, meta)
        except ValueError:
            raise
        except Exception as err:  # a truncated or foreign file fails while parsing
            raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__}: "
                             f"{err})") from None
    return meta


def _check_config(meta: dict[str, Any], config: SubnetConfig, path: Path,
                  config_file: str | Path) -> None:
    if meta["architecture_key"] != config.key():
        raise ValueError(f"{path}: graphs of architecture {meta['architecture_key']}, "
                         f"{config_file} has {config.key()} (re-export with automoe onnx "
                         "--overwrite)")
    want = cache_shapes(config)
    if meta["cache"] != want:
        raise ValueError(f"{path}: 'cache' {meta['cache']} is not the cache of the "
                         f"architecture in {config_file} ({want})")


def _check_graph(path: Path, graph_name: str, meta: dict[str, Any]) -> None:
    """The graph's own metadata, input and output names and static sizes are the ones
    onnx.json gives."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    io = meta[graph_name]
    got = {"inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}
    if got != io:
        raise ValueError(f"{path}: the graph's inputs/outputs {got} are not onnx.json's {io}")
    props = {p.key: p.value for p in model.metadata_props}
    if props.get(ARCHITECTURE_PROP) != meta["architecture_key"]:
        raise ValueError(f"{path}: a graph of architecture {props.get(ARCHITECTURE_PROP)!r} "
                         f"(its metadata), onnx.json says {meta['architecture_key']}")
    # the static sizes each cache tensor and the logits must have: [batch, heads, time, dim]
    want: dict[str, tuple[int | None, ...]] = {"logits": (None, None, meta["vocab_size"])}
    for i, c in enumerate(meta["cache"]):
        for kv in ("key", "value"):
            want[f"cross_{kv}_{i}"] = (None, c["cross_heads"], None, c["cross_head_dim"])
            for io_name in ("past", "present"):
                want[f"{io_name}_{kv}_{i}"] = (None, c["heads"], None, c["head_dim"])
    for value in [*graph.input, *graph.output]:
        if value.name not in want:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None
                     for d in value.type.tensor_type.shape.dim)
        expected = want[value.name]
        if len(dims) != len(expected) or any(e is not None and d != e
                                             for d, e in zip(dims, expected, strict=True)):
            raise ValueError(f"{path}: {value.name!r} has sizes {list(dims)}, onnx.json "
                             f"implies {list(expected)} (None: any)")
