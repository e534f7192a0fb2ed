"""Training checkpoints: atomic writes, safe loads, identity checks, averaging.

A checkpoint is one ``torch.save`` file holding only tensors and plain containers
(dict/list/tuple/str/int/float/bool/None), so it loads with ``torch.load(weights_only=True)``
and never unpickles code. It is written to a temporary file beside the target, flushed to
disk, then renamed over the target: a run killed mid-write leaves the previous checkpoint
intact. Every checkpoint carries ``format``, the model ``kind`` and the model's identity (the
search space, or the subnet config, and the vocabulary size); `load_checkpoint` refuses a file
whose identity differs from the model it is loaded into, naming the differing fields.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from search_spaces.files import atomic_path

__all__ = ["FORMAT", "plain", "save_checkpoint", "load_checkpoint", "average_model_states",
           "describe_mismatch"]

FORMAT = "automoe-train-v1"


def plain(obj: Any) -> Any:
    """`obj` as plain JSON-like data: dataclasses become dicts, tuples lists, paths strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Writes `state` (tensors and plain containers) atomically to `path`; returns it."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, **state}, fh)
    return Path(path)


def describe_mismatch(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two plain values (first few, by key path)."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(wanted)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in wanted:
                out.append(f"{name} only in {'checkpoint' if key in saved else 'this run'}")
            else:
                out += describe_mismatch(saved[key], wanted[key], name)
        return out
    if saved != wanted:
        return [f"{prefix or 'value'}: checkpoint has {saved!r}, this run has {wanted!r}"]
    return []


def load_checkpoint(path: str | os.PathLike, *,
                    expect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Loads a checkpoint written by `save_checkpoint` onto the CPU (weights_only).

    Args:
        path: the checkpoint file.
        expect: entries the checkpoint must hold with equal (plain) values, e.g.
            ``{"kind": "supernet", "space": plain(space), "vocab_size": 8000}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable or truncated file, not an AutoMoE checkpoint, or an identity
            that differs from `expect` (the message lists the differing fields).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files; all mean "unreadable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                         f"{first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not an AutoMoE training checkpoint (format {found!r}, "
                         f"expected {FORMAT!r})")
    for key, wanted in (expect or {}).items():
        wanted = plain(wanted)
        if key not in state:
            raise ValueError(f"{path}: checkpoint has no {key!r} entry")
        diffs = describe_mismatch(plain(state[key]), wanted, key)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)"
                                             if len(diffs) > 5 else "")
            raise ValueError(f"{path}: checkpoint is for another {key}: {shown}")
    return state


def average_model_states(paths: Sequence[str | os.PathLike], *,
                         expect: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``model`` state dicts of several checkpoints (summed in
    float64, cast back to each tensor's dtype; non-float tensors come from the last file)."""
    if not paths:
        raise ValueError("average_model_states needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        model = load_checkpoint(path, expect=expect)["model"]
        if dtypes and set(model) != set(dtypes):
            raise ValueError(f"{path}: its model has other parameters than {paths[0]}")
        for name, tensor in model.items():
            dtypes[name] = tensor.dtype
            if tensor.is_floating_point():
                acc = total.get(name)
                total[name] = tensor.double() if acc is None else acc + tensor.double()
            else:
                total[name] = tensor
    return {name: (t / len(paths)).to(dtypes[name]) if t.is_floating_point() else t
            for name, t in total.items()}
