"""`automoe cost CONFIG --space NAME`: parameters and analytic FLOPs of one subnet."""

from __future__ import annotations

import argparse
import json

from automoe.costs.flops import FlopsProtocol
from automoe.costs.report import DEFAULT_VOCAB_SIZE, cost_report
from search_spaces import load_space
from search_spaces.importers import read_subnet
from supernet.options import DEFAULT_OPTIONS, ModelOptions

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cost",
        help="parameters and FLOPs of a subnet (HAT protocol by default)",
        description=(
            "Parameters (total incl. embeddings, active per token, HAT convention) and analytic "
            "FLOPs (2 x multiply-adds of the matmuls; batch 1, 30 source + 30 teacher-forced "
            "target tokens, embeddings and output projection excluded, as HAT and AutoMoE "
            "report them) of one subnet. MoE layers count each token's top-k experts; with "
            "experts of different sizes the count is the expectation under uniform routing."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="subnet JSON, exported model dir, or HAT/AutoMoE subnet YAML")
    p.add_argument("--space", required=True, help="search space name or YAML path")
    p.add_argument("--seq-len", type=int, default=None,
                   help="source and target length (HAT: 30 for WMT, 23 for IWSLT; default 30)")
    p.add_argument("--src-len", type=int, default=30, help="source length (default: %(default)s)")
    p.add_argument("--tgt-len", type=int, default=30, help="target length (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="sentences (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary for total params and the output projection (default: an "
                        f"exported model's own, else {DEFAULT_VOCAB_SIZE}, the data pipeline's "
                        "default)")
    ln = p.add_mutually_exclusive_group()
    ln.add_argument("--pre-ln", dest="normalize_before", action="store_const", const=True,
                    help="count a pre-LN model (a final layer norm per stack; default: an "
                         "exported model's own options, else post-LN)")
    ln.add_argument("--post-ln", dest="normalize_before", action="store_const", const=False,
                    help="count a post-LN model")
    p.add_argument("--include-output-projection", action="store_true",
                   help="add the output projection's FLOPs (T x d_dec x vocab)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    subnet = read_subnet(args.config, load_space(args.space))
    config = subnet.config
    if args.vocab_size is not None and args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be >= 1, got {args.vocab_size}")
    vocab_size = args.vocab_size or subnet.vocab_size or DEFAULT_VOCAB_SIZE
    options = DEFAULT_OPTIONS if subnet.options is None else ModelOptions.from_dict(
        subnet.options, source=f"{subnet.path}: 'options'")
    normalize_before = (options.normalize_before if args.normalize_before is None
                        else args.normalize_before)
    protocol = FlopsProtocol(
        src_len=args.seq_len or args.src_len,
        tgt_len=args.seq_len or args.tgt_len,
        batch=args.batch,
        include_output_projection=args.include_output_projection,
        vocab_size=vocab_size,
    )
    r = cost_report(config, protocol, vocab_size, normalize_before=normalize_before)
    if args.json:
        print(json.dumps(r))
        return 0
    kind = "dense" if config.is_dense else "MoE"
    ln = "pre-LN" if normalize_before else "post-LN"
    print(f"subnet {r['key']} ({kind}, {config.encoder_layers}+{config.decoder_layers} layers, {ln})")
    print(f"params  total {r['params_total'] / 1e6:.3f} M (incl. embeddings, vocab {vocab_size}) | "
          f"active {r['params_active'] / 1e6:.3f} M | HAT {r['params_hat'] / 1e6:.3f} M "
          f"(excl. embeddings and output layer)")
    print(f"bytes   weights {r['weight_bytes'] / 1e6:.3f} MB (experts at their precision, excl. "
          f"embeddings) | embeddings {r['embedding_bytes'] / 1e6:.3f} MB")
    spread = "" if r["macs_min"] == r["macs_max"] else (
        f" (routing range {2 * r['macs_min'] / 1e9:.4f}-{2 * r['macs_max'] / 1e9:.4f})")
    print(f"FLOPs   {r['flops'] / 1e9:.4f} G = 2 x {r['macs'] / 1e9:.4f} G MACs{spread}")
    print(f"protocol {r['protocol']}")
    return 0
