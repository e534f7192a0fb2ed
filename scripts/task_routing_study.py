"""The task-routing study of results/README.md (automoe/task_study.py).

    python scripts/task_routing_study.py [--out runs/task-study] [--plan bible-x] [--quiet]

Prepares bible-en-x (en -> de, fr, es), trains a dense Transformer, a token-routed and a
task-routed decoder-MoE of the same served width from scratch with 2 seeds each, then
scores every model per language (test BLEU, chrF, NLL; per-sentence archives), compares the
systems with paired tests and measures what serves one language (parameters, bytes,
decoding throughput in torch and ONNX Runtime). About 3 hours on 2 CPU cores; re-running
the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from automoe.task_study import TASK_STUDY_PLANS
from automoe.workflows.task_study import run_task_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/task-study", help="output root (default %(default)s)")
    p.add_argument("--plan", default="bible-x", choices=sorted(TASK_STUDY_PLANS))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        run_task_study(TASK_STUDY_PLANS[args.plan], args.out, quiet=args.quiet)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"task_routing_study: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
