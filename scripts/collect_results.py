"""Copy the small, reviewable files of a pipeline run or a reference study into results/
(no weights, no corpora).

    python scripts/collect_results.py runs/demo results/demo [--log demo.log]
    python scripts/collect_results.py runs/study results/study [--log study.log]

A pipeline run (``automoe.workflows.pipeline``): the search tables and metadata with the
per-sentence scores of its comparisons, the supernet's training logs and settings, the
exported subnet's config/scores (not model.safetensors), the retraining table when there
is one, the translations and the plots. A study
(``automoe.study``, recognised by its ``study.json``): the same for the supernet, both
searches (tables, comparisons, retrained tables, trial results), the fidelity tables and
plots, every per-model score and per-sentence archive of the fidelity study (enough to
resume it elsewhere: copy the folder back and rerun the study), ``moe_vs_dense.csv``,
the supernet variants' logs, inherited scores and ``variants.json``, and ``study.json``.
With ``--log``, also a copy of the run's console log with progress-bar redraws removed
(only the final state of each bar is kept).
Absolute paths of this machine in the copied text (runs record resolved paths) are made
relative to the directory the command runs in.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

_SEARCH = ("candidates.csv", "pareto.csv", "baselines.csv", "comparisons.csv", "search.json",
           "retrained.csv")
FILES = (
    *(f"search/{name}" for name in _SEARCH),
    "search/sentences/comparisons/*.npz",  # what every comparison is recomputed from
    "supernet/run.json", "supernet/train_log.csv", "supernet/valid_log.csv",
    "subnet/config.json", "subnet/subnet.json", "subnet/scores.json",
    "translations.tsv",
)
STUDY_FILES = (
    "study.json", "moe_vs_dense.csv", "data/meta.json",
    "supernet/run.json", "supernet/train_log.csv", "supernet/valid_log.csv",
    *(f"{run}/{name}" for run in ("search", "dense_search") for name in _SEARCH),
    *(f"{run}/sentences/comparisons/*.npz" for run in ("search", "dense_search")),
    "fidelity/fidelity.csv", "fidelity/fidelity.json", "fidelity/search.json",
    "fidelity/candidates.csv", "fidelity/retrained.csv", "fidelity/standalone.csv",
    # what a banded study resumes from on another machine (automoe.fidelity): every score
    # and per-sentence archive, never the weights
    "fidelity/inherited/*.json", "fidelity/standalone/*/*.json",
    "fidelity/sentences/*/*.npz",
    # supernet variants (automoe.supernet_variants): each variant's training logs and its
    # inherited scores of the same subnets, and the comparison
    "variants.json",
    *(f"supernet-*/{name}" for name in ("run.json", "train_log.csv", "valid_log.csv")),
    *(f"fidelity-*/{name}" for name in ("fidelity.csv", "fidelity.json", "candidates.csv",
                                         "search.json", "standalone.csv")),
    "fidelity-*/inherited/*.json", "fidelity-*/sentences/inherited/*.npz",
)
PLOT_DIRS = ("plots", "fidelity", "fidelity/plots", "fidelity-*")


_BAR = re.compile(r"^\s*([^:|]{1,40}):\s*\d+%\|")  # "train:  42%|████  | 210/500 ..."
_NOISE = re.compile(r"^WARNING: Location 'file://")  # pip on this machine's local index
_PIP_BUILD = re.compile(r"/\S*/pip-build-env-[^/\s]+(/overlay)?")  # a temporary dir of pip's


def clean_log(text: str) -> str:
    """Console text as a terminal would have left it: for each progress bar only its last
    state, no escape sequences, no blank lines, no pip index warnings, and pip's temporary
    build directory as ``<pip build env>``."""
    lines = []
    for raw in re.split(r"[\r\n]", text):
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).rstrip()
        line = _PIP_BUILD.sub("<pip build env>", line)
        if not line.strip() or _NOISE.match(line):
            continue
        bar = _BAR.match(line)
        if bar and lines and (prev := _BAR.match(lines[-1])) and prev.group(1) == bar.group(1):
            lines[-1] = line  # a redraw of the same bar
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def relative_paths(text: str, cwd: Path) -> str:
    """`text` with every absolute path under `cwd` written relative to it."""
    return text.replace(str(cwd.resolve()) + "/", "")


def _copy(src: Path, dst: Path, cwd: Path) -> None:
    if src.suffix in (".csv", ".json", ".log", ".txt", ".tsv", ".svg"):
        text = src.read_text(encoding="utf-8", errors="replace")
        dst.write_text(relative_paths(text, cwd), encoding="utf-8")
    else:
        shutil.copyfile(src, dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="pipeline output root (e.g. runs/demo)")
    p.add_argument("dest", type=Path, help="destination under results/")
    p.add_argument("--log", type=Path, help="console log of the run to clean and copy")
    args = p.parse_args(argv)
    study = (args.run / "study.json").is_file()
    if not study and not (args.run / "search" / "search.json").is_file():
        print(f"{args.run}: neither a pipeline run (search/search.json) nor a study "
              "(study.json)", file=sys.stderr)
        return 2
    copied = []
    for pattern in STUDY_FILES if study else FILES:
        for src in sorted(args.run.glob(pattern)):
            if src.is_file():
                dst = args.dest / src.relative_to(args.run)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _copy(src, dst, Path.cwd())
                copied.append(dst)
    plots = [p for d in PLOT_DIRS for p in sorted(args.run.glob(f"{d}/*.*"))
             if p.suffix in (".png", ".svg")]
    for plot in plots:
        dst = args.dest / plot.relative_to(args.run)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _copy(plot, dst, Path.cwd())
        copied.append(dst)
    if args.log:
        dst = args.dest / ("study.log" if study else "demo.log")
        text = clean_log(args.log.read_text(encoding="utf-8", errors="replace"))
        dst.write_text(relative_paths(text, Path.cwd()), encoding="utf-8")
        copied.append(dst)
    for path in copied:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
