"""`automoe export RUN_DIR --pick RULE -o SUBNET_DIR`: one searched subnet as a standalone
model (see `automoe.export`)."""

from __future__ import annotations

import argparse

from automoe.pick import DEFAULT_PICK, PICK_HELP

__all__ = ["register"]

_SHOWN = ("bleu", "loss", "flops", "params", "latency_ms", "latency_ort_ms")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a searched subnet as a standalone model (inherited weights)",
        description=(
            "Choose one candidate of a search run and write it as a standalone model: "
            "config.json + model.safetensors (weights inherited from the supernet, not "
            "retrained), spm.model, subnet.json (for `automoe train --subnet`, `automoe "
            "cost`) and scores.json (its search scores, protocols and latency device). "
            "Load it with automoe.load_subnet(SUBNET_DIR) or use it with `automoe translate` "
            "/ `automoe evaluate`. Pick rules: best-bleu / best-loss = the best feasible "
            "candidate by that metric; knee = the front point nearest the ideal point after "
            "normalising each objective to [0, 1] over the front; METRIC<=X / METRIC>=X = "
            "the best by BLEU (else the run's first objective) among feasible candidates "
            "meeting the bound; HASH = a candidate key or a unique prefix (>= 4 hex digits). "
            "Ties go to the smaller key."),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="search run dir (automoe search --out)")
    p.add_argument("--pick", default=DEFAULT_PICK, metavar="RULE", help=PICK_HELP)
    p.add_argument("-o", "--out", required=True, metavar="SUBNET_DIR",
                   help="directory to write (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model directory at SUBNET_DIR")
    p.add_argument("--task", default=None, metavar="LANG",
                   help="a multilingual run: write only what target language LANG uses (each "
                        "task-routed layer becomes one dense FFN of its chosen experts)")
    p.add_argument("--onnx", action="store_true",
                   help="also write ONNX graphs (encoder, cached decoder step) into "
                        "SUBNET_DIR/onnx (needs the onnx extra; see `automoe onnx`)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from automoe.export import export_subnet  # reads the run's tables (pandas)

    result = export_subnet(args.run_dir, args.out, pick=args.pick, overwrite=args.overwrite,
                           onnx=args.onnx, task=args.task)
    s = result.scores
    metrics = ", ".join(f"{m}={s[m]:.4g}" for m in _SHOWN if s.get(m) is not None)
    print(f"{result.path}: candidate {result.key} of {args.run_dir} (--pick {result.rule}; "
          f"{'feasible' if s.get('feasible', True) else 'INFEASIBLE'}): {metrics}")
    for file in result.files:
        print(f"  {file}")
    return 0
