"""The files of a saved static `Transformer`: a directory with ``config.json`` (format,
architecture, vocabulary, options) and ``model.safetensors`` (the tensors). No pickle.

`write_model_dir` writes one atomically (a temporary directory renamed into place);
`read_model_config` and `read_model_weights` read it back and check everything: every
problem is a ValueError naming the file and what was expected. `Transformer.save` and
`Transformer.load` build on these; this module knows no model class, so it does not import
`supernet.transformer` (which imports it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from search_spaces.config import SubnetConfig
from search_spaces.files import atomic_dir, read_json
from supernet import tokens
from supernet.options import ModelOptions

__all__ = ["write_model_dir", "read_model_config", "read_model_weights", "save_safetensors",
           "FORMAT",
           "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE"]

FORMAT = "automoe-transformer"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_SPECIAL_TOKENS = {"pad": tokens.PAD_ID, "unk": tokens.UNK_ID, "bos": tokens.BOS_ID,
                   "eos": tokens.EOS_ID}


def write_model_dir(directory: str | Path, *, config: SubnetConfig, vocab_size: int,
                    options: ModelOptions, state: Mapping[str, torch.Tensor],
                    dtype: torch.dtype, overwrite: bool = False,
                    extra: dict[str, Any] | None = None) -> Path:
    """Writes a model's ``state`` dict and description into ``directory`` (replaced as a
    whole if ``overwrite``, FileExistsError otherwise).

    ``extra`` is free JSON metadata stored under the key ``"extra"`` (e.g. the search space,
    measured costs); the readers ignore it.
    """
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.to_dict(),
        "architecture_key": config.key(),
        "vocab_size": vocab_size,
        "special_tokens": dict(_SPECIAL_TOKENS),
        "options": options.to_dict(),
        "dtype": str(dtype).removeprefix("torch."),
        "extra": extra or {},
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        save_safetensors(tensors, tmp / WEIGHTS_FILE, metadata={"format": FORMAT},
                         name=Path(directory) / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


def save_safetensors(tensors: dict[str, Any], path: Path, *, name: Path,
                     metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with its errors (a full disk, say) as one OSError
    naming the file being written (`name`: where it will live, not the temporary path)."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        raise OSError(f"writing {name}: {' '.join(str(err).split())}") from None


def read_model_config(directory: str | Path) -> tuple[SubnetConfig, int, ModelOptions]:
    """The architecture, vocabulary size and options that ``directory`` records."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a directory written by "
                                "Transformer.save")
    meta = read_json(path)  # ValueError naming the file
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
    if meta["special_tokens"] != _SPECIAL_TOKENS:
        raise ValueError(f"{path}: 'special_tokens' {meta['special_tokens']!r} differ from "
                         f"this system's {_SPECIAL_TOKENS}")
    options = ModelOptions.from_dict(meta["options"], source=f"{path}: 'options'")
    return config, vocab, options


def read_model_weights(directory: str | Path, expected: Mapping[str, tuple[int, ...]], *,
                       integer: Mapping[str, torch.dtype] | None = None
                       ) -> dict[str, torch.Tensor]:
    """The tensors of ``directory`` on the CPU, checked against ``expected`` (name -> shape,
    from a model built on the meta device): same names and shapes; the tensors named in
    ``integer`` (quantized weights) of exactly the dtype given there, all others of one
    floating dtype with finite values.

    The shapes are checked from the file's header before any tensor is read, so a tampered
    config (say a huge vocab_size) fails before anything of that size is allocated.
    """
    root = Path(directory)
    integer = dict(integer or {})
    weights_path = root / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} does not exist")
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file (corrupt or "
                         f"truncated?): {err}") from None
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if len(missing) == 1 and not unexpected:
        raise ValueError(f"{weights_path}: tensor '{missing[0]}' is missing ({root / CONFIG_FILE}"
                         " implies it)")
    if missing or unexpected:
        raise ValueError(f"{weights_path}: tensors do not match {root / CONFIG_FILE}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if shapes[name] != tuple(shape):
            raise ValueError(f"{weights_path}: tensor '{name}' has shape {shapes[name]}, "
                             f"{root / CONFIG_FILE} implies {tuple(shape)}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file (corrupt or "
                         f"truncated?): {err}") from None
    for name, dtype in integer.items():
        if state[name].dtype != dtype:
            raise ValueError(f"{weights_path}: tensor '{name}' is {state[name].dtype}, "
                             f"{root / CONFIG_FILE} implies quantized values of {dtype}")
    dtypes = {t.dtype for name, t in state.items() if name not in integer}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"{weights_path}: expected floating-point tensors of one dtype, got "
                         f"{sorted(str(d) for d in dtypes)}")
    for name in expected:
        if name not in integer and not torch.isfinite(state[name]).all():
            raise ValueError(f"{weights_path}: tensor '{name}' holds non-finite values")
    return state
