"""`make demo`: the whole AutoMoE workflow on the built-in default, in minutes on a CPU.

    python scripts/demo.py [--out runs/demo] [--preset demo|wmt] [--data DIR] [--quiet]

Prepares the default corpus (bible-en-de), trains the `demo` supernet, runs an NSGA-II
search for dev loss vs FLOPs vs latency on a local Ray cluster (then the front's paired
tests of loss, BLEU and chrF against the reference subnets), exports the knee subnet of the
front, translates a few test sentences with it and draws the Pareto plots. Re-running the
same command resumes an interrupted run. Each step calls the library function its `automoe`
command calls (automoe/workflows/pipeline.py: the presets are typed settings), and each run
directory stores the settings it ran with.

`--preset wmt` is the GPU recipe (AutoMoE's WMT'14 space and training schedule); it needs
a prepared data dir (`--data`), see README.md.
"""

from __future__ import annotations

import argparse
import sys

from automoe.workflows.pipeline import PIPELINE_PRESETS, preset_with, run_pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="output root (default %(default)s)")
    p.add_argument("--preset", default="demo", choices=sorted(PIPELINE_PRESETS))
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a prepared data dir instead of the preset's built-in corpus")
    p.add_argument("--pick", default=None, help="export rule (default: the preset's, knee)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    changes = {"pick": args.pick} if args.pick else {}
    try:
        run_pipeline(preset_with(args.preset, **changes), args.out, data_dir=args.data,
                     quiet=args.quiet)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
