"""The search engine (NSGA-II, HAT's GA, random search of `evolution/`) against pymoo's
NSGA-II on ZDT1-3 and DTLZ2 with 2 and 3 objectives (docs/benchmarks.md, "Search engine
against pymoo").

    python scripts/bench_pymoo.py [--problems zdt1,zdt2] [--algorithms nsga2,pymoo-grid]
        [--seeds 10] [--evaluations 2500] [--population 50] [--levels 1001] \
        [--baselines pymoo-grid,pymoo-real] [--reuse RECORD.json] [--holm-over table] \
        [--out results/pymoo]

Every problem x algorithm x seed runs until it has made ``--evaluations`` distinct
evaluations; its score is the exact hypervolume (moocore) of all of them against the
problem's fixed reference point. The engines search a grid of ``--levels`` values per
variable; pymoo runs on the same grid (``pymoo-grid``) and on the continuous problem
(``pymoo-real``). Protocol: `automoe.bench.known_fronts`. Writes OUT/bench_pymoo.json
(settings, machine, reference points, every run, the summaries) and OUT/hypervolumes.csv
(one row per run: a reader can recompute every median and test from it); prints one table
per baseline. ``--algorithms nsga2-rate,nsga2-local`` runs the engine's NSGA-II with
per-gene mutation 1/n_var (HAT's redraw, or a local step); ``--reuse`` takes the runs of
the baselines not run from an earlier record, after re-running one of each. Needs
``pip install 'automoe[bench]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages first

from automoe.bench.known_fronts import (  # noqa: E402
    ALGORITHMS,
    DEFAULT_ALGORITHMS,
    PROBLEMS,
    KnownFrontSettings,
    run_known_fronts,
)
from automoe.bench.report import add_run_options, comma_names, write_record  # noqa: E402

RUNS_CSV = "hypervolumes.csv"  # one row per run, beside the JSON (automoe.recompute reads it)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=comma_names, default=tuple(PROBLEMS),
                        help=f"comma-separated, of {','.join(PROBLEMS)}")
    parser.add_argument("--algorithms", type=comma_names, default=DEFAULT_ALGORITHMS,
                        help=f"comma-separated, of {','.join(ALGORITHMS)} (default "
                             f"{','.join(DEFAULT_ALGORITHMS)})")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--evaluations", type=int, default=2500)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--levels", type=int, default=1001,
                        help="grid values per variable for the engines and pymoo-grid")
    parser.add_argument("--baselines", type=comma_names, default=("pymoo-grid", "pymoo-real"),
                        help="algorithms every other is compared with (default "
                             "pymoo-grid,pymoo-real)")
    add_run_options(parser, record="bench_pymoo.json", same="evaluations, population, levels",
                    out=Path("results/pymoo"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        settings = KnownFrontSettings(problems=args.problems, algorithms=args.algorithms,
                                      seeds=tuple(range(args.seeds)),
                                      evaluations=args.evaluations,
                                      population=args.population, levels=args.levels,
                                      baselines=args.baselines, reuse=args.reuse,
                                      holm_over=args.holm_over)
        record = run_known_fronts(settings, progress)
    except ValueError as err:
        print(f"bench_pymoo: {err}", file=sys.stderr)
        return 2
    write_record(record, args.out, "bench_pymoo.json", RUNS_CSV)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
