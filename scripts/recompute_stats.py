"""Recompute every p-value and interval under a results directory from its stored
per-sentence scores (and per-run tables), and report any number that does not come out
the same.

    python scripts/recompute_stats.py [ROOT ...]      (default: results/)

Checks each search run's ``comparisons.csv`` against ``sentences/comparisons/*.npz``, each
fidelity study's ``fidelity.json``, ``fidelity.csv`` and ``standalone.csv`` against
``sentences/``, each comparison of supernet variants (``variants.json``) against its
studies' tables, and each search benchmark's summaries against its per-run table
(`automoe.recompute`). Exit status 1 when a number differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.recompute import recompute_all  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="*", default=[str(Path(__file__).resolve().parents[1]
                                                    / "results")])
    args = p.parse_args(argv)
    bad = 0
    for root in args.roots:
        checked, mismatches = recompute_all(root)
        for line in mismatches:
            print(line)
        bad += len(mismatches)
        print(f"{root}: {len(checked)} tables recomputed from their stored scores, "
              f"{len(mismatches)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
