"""`automoe cost CONFIG --space NAME`: parameters and analytic FLOPs of one subnet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from automoe.costs.flops import FlopsProtocol, flops
from supernet.tokens import DEFAULT_VOCAB_SIZE

PARAMS_PROTOCOL = (
    "total: every parameter incl. the shared embedding table (output projection tied, "
    "sinusoidal positions); active: expected per token under uniform routing (top-k of n "
    "experts); hat: total without the embedding table / output projection (HAT convention), "
    "routers included"
)

__all__ = ["register", "load_subnet", "cost_report", "DEFAULT_VOCAB_SIZE"]


def load_subnet(path: str, space: Any) -> tuple[Any, Any]:
    """``(space, config)`` from a subnet JSON (`SubnetConfig.to_json`, or an exported
    model dir's ``config.json``) or a HAT/AutoMoE subnet YAML, validated against the space
    (a `SearchSpace`, or a name or YAML path to load)."""
    from search_spaces import load_space
    from search_spaces.config import SubnetConfig

    if isinstance(space, (str, Path)):
        space = load_space(space)
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such subnet config file")
    if p.suffix in (".yml", ".yaml"):
        from search_spaces.importers import import_hat_yaml

        config = import_hat_yaml(p, space)
    else:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}: not valid JSON ({err})") from None
        if isinstance(data, dict) and isinstance(data.get("architecture"), dict):
            data = data["architecture"]  # an exported model's config.json wraps the subnet
        config = SubnetConfig.from_dict(data, source=str(p))
    space.validate(config, source=str(p))
    return space, config


def cost_report(config: Any, protocol: FlopsProtocol, vocab_size: int) -> dict[str, Any]:
    """The JSON object `automoe cost --json` prints."""
    from supernet.params import count_params

    params = count_params(config, vocab_size)
    report = flops(config, protocol)
    return {
        "key": config.key(),
        "params_total": params.total,
        "params_active": params.active,
        "params_hat": params.hat,
        "macs": report.macs,
        "flops": report.flops,
        "macs_min": report.macs_min,
        "macs_max": report.macs_max,
        "routing": report.routing,
        "breakdown_macs": report.breakdown,
        "vocab_size": vocab_size,
        "protocol": protocol.describe(),
        "protocol_settings": protocol.to_dict(),
        "params_protocol": PARAMS_PROTOCOL,
    }


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
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                   help="vocabulary for total params and the output projection (default: "
                        "%(default)s, the data pipeline's default)")
    p.add_argument("--include-output-projection", action="store_true",
                   help="add the output projection's FLOPs (T x d_dec x vocab)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    _, config = load_subnet(args.config, args.space)
    if args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be >= 1, got {args.vocab_size}")
    protocol = FlopsProtocol(
        src_len=args.seq_len or args.src_len,
        tgt_len=args.seq_len or args.tgt_len,
        batch=args.batch,
        include_output_projection=args.include_output_projection,
        vocab_size=args.vocab_size,
    )
    r = cost_report(config, protocol, args.vocab_size)
    if args.json:
        print(json.dumps(r))
        return 0
    kind = "dense" if config.is_dense else "MoE"
    print(f"subnet {r['key']} ({kind}, {config.encoder_layers}+{config.decoder_layers} layers)")
    print(f"params  total {r['params_total'] / 1e6:.3f} M (incl. embeddings, vocab {args.vocab_size}) | "
          f"active {r['params_active'] / 1e6:.3f} M | HAT {r['params_hat'] / 1e6:.3f} M "
          f"(excl. embeddings and output layer)")
    spread = "" if r["macs_min"] == r["macs_max"] else (
        f" (routing range {2 * r['macs_min'] / 1e9:.4f}-{2 * r['macs_max'] / 1e9:.4f})")
    print(f"FLOPs   {r['flops'] / 1e9:.4f} G = 2 x {r['macs'] / 1e9:.4f} G MACs{spread}")
    print(f"protocol {r['protocol']}")
    return 0
