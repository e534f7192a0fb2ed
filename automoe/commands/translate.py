"""`automoe translate MODEL_DIR`: translate text (stdin -> stdout, or --input/--output files)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["register", "add_decoding_args", "decoding_kwargs"]


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
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--task", default=None, metavar="LANG",
                   help="a multilingual model's target language (default: the one a model "
                        "exported with --task serves)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="run the torch model (default) or MODEL_DIR/onnx in ONNX Runtime "
                        "(written by automoe onnx; CUDA provider with --device cuda)")


def decoding_kwargs(args: argparse.Namespace) -> dict:
    """The decoding options of `automoe.decoding`, the device resolved and checked."""
    from automoe.devices import check_device, default_device

    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    device = check_device(args.device) or default_device()
    return {"beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a,
            "max_len_b": args.max_len_b, "max_tokens": args.max_tokens, "device": device}


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


@contextlib.contextmanager
def named_model(model_dir: str) -> Iterator[None]:
    """Decoding errors that come from the model's weights name its directory."""
    from automoe.decoding import NonFiniteScores

    try:
        yield
    except NonFiniteScores as err:
        raise ValueError(f"{model_dir}: {err}") from None


def _run(args: argparse.Namespace) -> int:
    from automoe.data.sources import decode_lines, read_lines
    from automoe.decoding import InputTooLong
    from automoe.export import load_subnet
    from automoe.io_utils import atomic_write_text

    kwargs = decoding_kwargs(args)
    subnet = load_subnet(args.model_dir, kwargs["device"], data_dir=args.data,
                         runtime=args.runtime)
    kwargs["device"] = subnet.device  # ONNX Runtime takes CPU tensors
    if args.input:
        lines = list(read_lines(Path(args.input)))
    else:
        lines = list(decode_lines(sys.stdin.buffer, "<stdin>"))
    nonempty = [i for i, ln in enumerate(lines) if ln.strip()]
    out = [""] * len(lines)
    with named_model(args.model_dir):
        try:
            texts = subnet.translate([lines[i] for i in nonempty], task=args.task, **kwargs)
        except InputTooLong as err:
            name = args.input or "<stdin>"
            raise ValueError(f"{name} line {nonempty[err.index] + 1}: {err.tokens} tokens "
                             f"with EOS, more than the model's max_positions ({err.limit})"
                             ) from None
        for i, text in zip(nonempty, texts, strict=True):
            out[i] = text
    text = "".join(t + "\n" for t in out)
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
