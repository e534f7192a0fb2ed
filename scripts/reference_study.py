"""The reference studies of results/README.md.

    python scripts/reference_study.py [--out runs/study] [--plan bible-demo|bible-bands|bible-bands-1200] [--quiet]

`bible-bands`: the banded fidelity study (docs/fidelity.md): prepares bible-en-de, trains a
`demo_small` supernet and runs `automoe fidelity` on 3 FLOPs bands of 6 subnets, each
trained alone with 2 seeds (about 3-4 hours on 2 CPU cores). `bible-demo`: the earlier
study: trains the `demo` supernet, searches it twice (whole space; dense only), runs
`automoe fidelity`, retrains the MoE front and the dense subnets of matched FLOPs with one
budget, and writes moe_vs_dense.csv (see automoe/study.py). Both are meant to be run in
parts: re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from automoe.study import STUDY_PLANS
from automoe.workflows.study import run_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/study", help="output root (default %(default)s)")
    p.add_argument("--plan", default="bible-demo", choices=sorted(STUDY_PLANS))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        run_study(STUDY_PLANS[args.plan], args.out, quiet=args.quiet)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"reference_study: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
