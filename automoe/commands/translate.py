"""`automoe translate MODEL_DIR`: translate text (stdin -> stdout, or --input/--output files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from automoe.data.sources import read_lines
from automoe.data.tokenizer import Tokenizer
from automoe.decoding import translate_texts
from automoe.io_utils import atomic_write_text

__all__ = ["register", "load_translation_model", "add_decoding_args", "decoding_kwargs"]


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR",
                   help="prepared data dir (its spm.model is used if MODEL_DIR has none)")
    p.add_argument("--beam", type=int, default=4, help="beam size, 1 = greedy (default 4)")
    p.add_argument("--lenpen", type=float, default=0.6,
                   help="length penalty: score / len**lenpen (default 0.6)")
    p.add_argument("--max-len-a", type=float, default=1.5,
                   help="max output tokens = a * source tokens + b (default a=1.5)")
    p.add_argument("--max-len-b", type=int, default=10, help="(default b=10)")
    p.add_argument("--max-tokens", type=int, default=8192,
                   help="decoding batch budget: sentences * source len * beam (default 8192)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda if available, else cpu)")


def decoding_kwargs(args: argparse.Namespace) -> dict:
    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    return {"beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a,
            "max_len_b": args.max_len_b, "max_tokens": args.max_tokens, "device": args.device}


def load_translation_model(model_dir: str, data_dir: str | None, device: str):
    """The exported Transformer in MODEL_DIR (eval mode, on `device`) and its tokenizer."""
    from automoe.devices import check_device

    check_device(device)
    from supernet import Transformer

    root = Path(model_dir)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root / 'config.json'} does not exist: MODEL_DIR must be a "
                                "directory written by Transformer.save / automoe export")
    if (root / "spm.model").is_file():
        tokenizer = Tokenizer.load(root / "spm.model")
    elif data_dir is not None:
        tokenizer = Tokenizer.load(Path(data_dir) / "spm.model")
    else:
        raise FileNotFoundError(f"{root} has no spm.model; pass --data DIR (the data dir the "
                                "model was trained on) to use its tokenizer")
    model = Transformer.load(root).to(device).eval()
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and vocab != tokenizer.vocab_size:
        raise ValueError(f"{root}: the model's vocabulary has {vocab} entries but the tokenizer "
                         f"{tokenizer.source} has {tokenizer.vocab_size}")
    return model, tokenizer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate", help="translate text with an exported model",
        description="Translate one sentence per line from stdin (or --input) to stdout (or "
                    "--output) with a model directory written by Transformer.save.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--input", metavar="FILE", help="UTF-8 text, one sentence per line")
    p.add_argument("--output", metavar="FILE", help="write translations here")
    add_decoding_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    kwargs = decoding_kwargs(args)
    model, tokenizer = load_translation_model(args.model_dir, args.data, args.device)
    if args.input:
        lines = list(read_lines(Path(args.input)))
    else:
        lines = [ln.rstrip("\r\n") for ln in sys.stdin]
    nonempty = [i for i, ln in enumerate(lines) if ln.strip()]
    out = [""] * len(lines)
    for i, text in zip(nonempty, translate_texts(model, tokenizer, [lines[i] for i in nonempty],
                                                 **kwargs), strict=True):
        out[i] = text
    text = "".join(t + "\n" for t in out)
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
