"""`automoe onnx MODEL_DIR`: write an exported model's ONNX graphs into MODEL_DIR/onnx, or
check them (see `automoe.onnx_export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "onnx", help="export a model dir to ONNX (encoder + cached decoder step)",
        description=(
            "Write MODEL_DIR/onnx/: encoder.onnx (src_tokens -> padding_mask and the "
            "cross-attention keys/values), decoder_step.onnx (one token with the "
            "self-attention key/value cache in and out -> logits) and onnx.json (names and "
            "cache shapes); dynamic "
            "batch and lengths, checked with onnx.checker. MODEL_DIR is written by `automoe "
            "export` or `automoe train`. With --check, only validate existing graphs."),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR/onnx")
    p.add_argument("--check", action="store_true",
                   help="validate MODEL_DIR/onnx instead of writing it")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from automoe.onnx_export import ONNX_DIR, ONNX_FILES, check_onnx_dir, export_subnet_onnx

    if args.check:
        from supernet.model_dir import read_model_config

        config = read_model_config(args.model_dir)[0]
        meta = check_onnx_dir(Path(args.model_dir) / ONNX_DIR, config,
                              config_file=Path(args.model_dir) / "config.json")
        print(f"{Path(args.model_dir) / ONNX_DIR}: valid ({meta['decoder_layers']} decoder "
              f"layers, opset {meta['opset']}, architecture {meta['architecture_key']})")
        return 0
    out = export_subnet_onnx(args.model_dir, overwrite=args.overwrite)
    for name in ONNX_FILES:
        print(f"  {out / name}")
    return 0
