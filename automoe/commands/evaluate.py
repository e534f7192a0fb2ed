"""`automoe evaluate MODEL_DIR --data DIR`: sacreBLEU, chrF and decoding speed on a split."""

from __future__ import annotations

import argparse
import json

from automoe.commands.translate import add_decoding_args, decoding_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="BLEU, chrF and tokens/s of an exported model on a prepared split",
        description="Translate a split of a prepared data dir with an exported model and score "
                    "it with sacrebleu (detokenised BLEU and chrF, with signatures).")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--limit", type=int, help="score only the first N sentences")
    p.add_argument("--hyps", metavar="FILE", help="also write the translations here")
    p.add_argument("--json", metavar="FILE", help="also write the scores here")
    add_decoding_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.data is None:
        raise ValueError("--data DIR is required: the prepared data dir holding the split")
    from automoe.commands.translate import named_model
    from automoe.decoding import evaluate_split
    from automoe.export import load_subnet
    from automoe.io_utils import atomic_write_json, atomic_write_text

    kwargs = decoding_kwargs(args)
    subnet = load_subnet(args.model_dir, kwargs["device"], data_dir=args.data,
                         runtime=args.runtime)
    kwargs["device"] = subnet.device  # ONNX Runtime takes CPU tensors
    model = subnet.model
    with named_model(args.model_dir):
        result = evaluate_split(model, args.data, args.split, limit=args.limit,
                                task=args.task or subnet.task, **kwargs)
    hyps = result.pop("hypotheses")
    result = {"model_dir": args.model_dir, "data": args.data, "device": kwargs["device"],
              "runtime": args.runtime, **result}
    if args.hyps:
        atomic_write_text(args.hyps, "".join(h + "\n" for h in hyps))
    if args.json:
        atomic_write_json(args.json, result)
    print(json.dumps(result, indent=2))
    return 0
