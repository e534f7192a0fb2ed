"""Saving and loading a static `Transformer` as a directory: ``config.json`` (format,
architecture, vocabulary, options) and ``model.safetensors`` (the tensors). No pickle.
Written atomically (a temporary directory renamed into place); every problem on load is a
ValueError naming the file and what was expected."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from search_spaces.config import SubnetConfig
from supernet import tokens
from supernet.options import ModelOptions
from supernet.transformer import Transformer

__all__ = ["save_transformer", "load_transformer", "FORMAT", "FORMAT_VERSION",
           "CONFIG_FILE", "WEIGHTS_FILE"]

FORMAT = "automoe-transformer"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_transformer(model: Transformer, directory: str | Path, *, overwrite: bool = False,
                     extra: dict[str, Any] | None = None) -> Path:
    """Writes ``model`` into ``directory`` (replaced as a whole if ``overwrite``).

    ``extra`` is free JSON metadata stored under the key ``"extra"`` (e.g. the search space,
    measured costs); `load_transformer` ignores it.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite=True to replace it)")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "architecture_key": model.config.key(),
        "vocab_size": model.vocab_size,
        "special_tokens": {"pad": tokens.PAD_ID, "unk": tokens.UNK_ID, "bos": tokens.BOS_ID,
                           "eos": tokens.EOS_ID},
        "options": model.options.to_dict(),
        "dtype": str(model.embed.dtype).removeprefix("torch."),
        "extra": extra or {},
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_meta(path: Path) -> tuple[SubnetConfig, int, ModelOptions]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a directory written by "
                                "Transformer.save")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: expected 'format': {FORMAT!r}, got "
                         f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: 'format_version' {meta.get('format_version')!r} is not "
                         f"supported (expected {FORMAT_VERSION})")
    for key in ("architecture", "vocab_size", "options", "special_tokens"):
        if key not in meta:
            raise ValueError(f"{path}: missing key '{key}'")
    config = SubnetConfig.from_dict(meta["architecture"], source=f"{path}: 'architecture'")
    vocab = meta["vocab_size"]
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 5:
        raise ValueError(f"{path}: 'vocab_size' must be an integer >= 5, got {vocab!r}")
    want = {"pad": tokens.PAD_ID, "unk": tokens.UNK_ID, "bos": tokens.BOS_ID,
            "eos": tokens.EOS_ID}
    if meta["special_tokens"] != want:
        raise ValueError(f"{path}: 'special_tokens' {meta['special_tokens']!r} differ from "
                         f"this system's {want}")
    options = ModelOptions.from_dict(meta["options"], source=f"{path}: 'options'")
    return config, vocab, options


def load_transformer(directory: str | Path, *, device: str | torch.device = "cpu") -> Transformer:
    """Loads a model written by `save_transformer` (on ``device``, in the saved dtype)."""
    root = Path(directory)
    config, vocab, options = _read_meta(root / CONFIG_FILE)
    weights_path = root / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} does not exist")
    # Shapes first, from the header and a model on the meta device: a tampered config (say a
    # huge vocab_size) must fail here, before anything of that size is allocated.
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file (corrupt or "
                         f"truncated?): {err}") from None
    expected = {k: tuple(v.shape) for k, v in Transformer(
        config, vocab, options=options, device="meta").state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path}: tensors do not match {root / CONFIG_FILE}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise ValueError(f"{weights_path}: tensor '{name}' has shape {shapes[name]}, "
                             f"{root / CONFIG_FILE} implies {shape}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file (corrupt or "
                         f"truncated?): {err}") from None
    model = Transformer(config, vocab, options=options)
    dtypes = {t.dtype for t in state.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"{weights_path}: expected floating-point tensors of one dtype, got "
                         f"{sorted(str(d) for d in dtypes)}")
    for name in expected:
        if not torch.isfinite(state[name]).all():
            raise ValueError(f"{weights_path}: tensor '{name}' holds non-finite values")
    model.to(dtype=next(iter(dtypes)))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
