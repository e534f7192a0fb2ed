"""`automoe plot RUN_DIR [RUN_DIR ...] -o DIR`: Pareto-front figures from search runs."""

from __future__ import annotations

import argparse

from automoe.plot_axes import axes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help="draw Pareto fronts (BLEU vs GFLOPs, BLEU vs latency) from search runs",
        description=(
            "Draw Pareto fronts from one or more search runs (RUN_DIR/candidates.csv): all "
            "candidates faint, each run's front highlighted, dense (o) and MoE (^) subnets "
            "told apart, baselines as stars, retrained scores as diamonds. Several runs are "
            "overlaid, e.g. a dense-only HAT space against an MoE space. Writes PNG and SVG."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="search run directories")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--label", action="append", default=None, metavar="NAME",
                   help="legend label per run (repeat; default: the run's name)")
    p.add_argument("--pairs", default=None,
                   help=f"comma-separated x:y pairs from {sorted(axes())} (default: each "
                        "quality objective of the runs (bleu, loss) against each of their "
                        "cost objectives, e.g. flops:loss,latency_ms:loss)")
    p.set_defaults(func=_run)


def _parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        x, sep, y = item.partition(":")
        if not sep or x not in axes() or y not in axes():
            raise ValueError(f"--pairs: bad pair {item!r}; expected x:y with x, y in {sorted(axes())}")
        pairs.append((x, y))
    return pairs


def _run(args: argparse.Namespace) -> int:
    from automoe.plots import load_run, plot_runs  # pandas (and matplotlib when drawing)

    labels = args.label or []
    if labels and len(labels) != len(args.runs):
        raise ValueError(f"--label given {len(labels)} times for {len(args.runs)} runs")
    runs = [load_run(r, labels[i] if labels else None) for i, r in enumerate(args.runs)]
    pairs = _parse_pairs(args.pairs) if args.pairs is not None else None
    for path in plot_runs(runs, args.out, pairs=pairs):
        print(path)
    return 0
