"""Start-up time of the light CLI commands (numbers go to docs/benchmarks.md).

    python scripts/bench_cli.py --out cli_times.json [--runs 5] [--repo DIR]

Each command runs in a fresh interpreter the way the ``automoe`` console script runs it
(``from automoe.cli import main``) with ``PYTHONPATH=DIR``, so ``--repo`` times another
checkout (e.g. one before a change) with the same inputs. Timed: a bare ``python -c pass``,
``automoe --help``, ``space show tiny``, ``subnet import`` of a HAT subnet YAML and ``cost``
of a subnet JSON (the largest subnet of space ``tiny``). One untimed run of each comes first
(file caches), then ``--runs`` timed ones; the JSON holds every wall time and the median.
Run it on a quiet machine: start-up time is mostly file reads and imports.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search_spaces import load_space
from search_spaces.files import atomic_write_json
from search_spaces.importers import to_hat_yaml

REPO = Path(__file__).resolve().parents[1]

CLI = "import sys; from automoe.cli import main; sys.exit(main())"


def commands(files: Path) -> dict[str, list[str]]:
    """name -> argv after the interpreter."""
    return {
        "python -c pass": ["-c", "pass"],
        "automoe --help": ["-c", CLI, "--help"],
        "automoe space show tiny": ["-c", CLI, "space", "show", "tiny"],
        "automoe subnet import": ["-c", CLI, "subnet", "import", str(files / "subnet.yml"),
                                  "--space", "tiny"],
        "automoe cost": ["-c", CLI, "cost", str(files / "subnet.json"), "--space", "tiny"],
    }


def time_once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one run in ``cwd``, the timed checkout: ``python -c`` puts the working
    directory first on sys.path, ahead of PYTHONPATH. A failing command stops the benchmark."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True,
                          text=True)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed with status {proc.returncode}: {proc.stderr[-2000:]}")
    return took


def commit(repo: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() or None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="FILE.json", help="write the results here")
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    p.add_argument("--repo", default=str(REPO),
                   help="checkout whose automoe is timed (default: this script's)")
    args = p.parse_args()
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")
    repo = Path(args.repo).resolve()
    env = {**os.environ, "PYTHONPATH": str(repo)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        config = load_space("tiny").largest()
        (files / "subnet.json").write_text(config.to_json(), encoding="utf-8")
        (files / "subnet.yml").write_text(to_hat_yaml(config), encoding="utf-8")
        for name, argv in commands(files).items():
            time_once(argv, env, repo)  # untimed: file caches
            times = [time_once(argv, env, repo) for _ in range(args.runs)]
            results[name] = {"median_s": statistics.median(times), "times_s": times}
            print(f"{name:28s} {results[name]['median_s']:.3f} s (median of {args.runs})")
    out = {
        "repo": str(repo),
        "commit": commit(repo),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": args.runs,
        "commands": results,
    }
    atomic_write_json(args.out, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
