"""The reference study of results/README.md: supernet fidelity and MoE vs dense at equal FLOPs.

    python scripts/reference_study.py [--out runs/study] [--plan bible-demo] [--quiet]

Trains the `demo` supernet on bible-en-de, searches it twice (whole space; dense only),
runs `automoe fidelity` on 16 subnets, retrains the MoE front and the dense subnets of
matched FLOPs with one budget, and writes moe_vs_dense.csv (see automoe/study.py). On 2 CPU
cores the `bible-demo` plan takes about 6.5 hours (see automoe/study.py), so it is meant to be
run in parts: re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from automoe.study import STUDY_PLANS, run_study


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
