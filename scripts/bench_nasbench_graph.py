"""The search engine (NSGA-II, HAT's GA, random search of `evolution/`) and pymoo's
NSGA-II on NAS-Bench-Graph's tabulated architectures (docs/benchmarks.md, "Search engine
on NAS-Bench-Graph").

    python scripts/bench_nasbench_graph.py [--datasets cora,citeseer,pubmed] \
        [--algorithms nsga2,hat-ga,random,pymoo] [--seeds 10] \
        [--checkpoints 100,300,1000] [--population 20] [--baselines pymoo,random] \
        [--reuse RECORD.json] [--holm-over table] [--out results/nasbench_graph]

Objectives: validation accuracy (max) and latency (min) as the package tabulates them;
the true front is the table's. Every dataset x algorithm x seed runs until it has
evaluated the largest checkpoint's number of distinct architectures; after each
checkpoint its score is the share of the true front's hypervolume its evaluations reach
(exact, moocore; fixed reference per dataset). Protocol:
`automoe.bench.nasbench_graph`. Writes OUT/bench_nasbench_graph.json (settings, machine,
each dataset's front and reference, every run, the summaries) and OUT/shares.csv (one row
per run); prints one table per checkpoint and baseline. ``--algorithms nsga2-rate`` runs
the engine's NSGA-II with per-gene mutation 1/5; ``--reuse`` takes the runs of the
baselines not run from an earlier record, after re-running one of each. Needs
``pip install 'automoe[bench]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages first

from automoe.bench.nasbench_graph import (  # noqa: E402
    ALGORITHMS,
    DATASETS,
    DEFAULT_ALGORITHMS,
    NasBenchSettings,
    run_nasbench_graph,
)
from automoe.bench.report import add_run_options, comma_names, write_record  # noqa: E402

RUNS_CSV = "shares.csv"  # one row per run, beside the JSON (automoe.recompute reads it)


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in comma_names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=comma_names, default=("cora", "citeseer", "pubmed"),
                        help=f"comma-separated, of {','.join(DATASETS)}")
    parser.add_argument("--algorithms", type=comma_names, default=DEFAULT_ALGORITHMS,
                        help=f"comma-separated, of {','.join(ALGORITHMS)} (default "
                             f"{','.join(DEFAULT_ALGORITHMS)})")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--checkpoints", type=_counts, default=(100, 300, 1000),
                        help="distinct evaluations after which to score (default 100,300,1000)")
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--baselines", type=comma_names, default=("pymoo", "random"),
                        help="algorithms every other is compared with (default pymoo,random)")
    add_run_options(parser, record="bench_nasbench_graph.json", same="checkpoints, population",
                    out=Path("results/nasbench_graph"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        settings = NasBenchSettings(datasets=args.datasets, algorithms=args.algorithms,
                                    seeds=tuple(range(args.seeds)),
                                    checkpoints=args.checkpoints, population=args.population,
                                    baselines=args.baselines, reuse=args.reuse,
                                    holm_over=args.holm_over)
        record = run_nasbench_graph(settings, progress)
    except ValueError as err:
        print(f"bench_nasbench_graph: {err}", file=sys.stderr)
        return 2
    write_record(record, args.out, "bench_nasbench_graph.json", RUNS_CSV)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
