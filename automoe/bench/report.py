"""Scores and summaries of benchmark runs: the exact hypervolume (moocore, checked against
the engine's own), medians with distribution-free intervals over seeds, rank-sum tests
against a baseline algorithm, a markdown table, the machine the runs ran on, and the runs
of an earlier record reused as a baseline."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from automoe.bench import require
from automoe.io_utils import atomic_write_csv, atomic_write_json, read_json
from automoe.seed_stats import median_interval, rank_sum_test
from automoe.stats import holm
from evolution.pareto import hypervolume as engine_hypervolume

__all__ = ["exact_hypervolume", "summarise", "HOLM_FAMILIES", "reuse_runs", "comma_names",
           "add_run_options", "markdown_table",
           "machine_record", "write_record"]

HOLM_FAMILIES = ("table", "algorithm")  # summarise's holm_over


def exact_hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume of ``points`` ([N, M], minimised) bounded by ``reference`` ([M]), by
    moocore; points not strictly better than the reference everywhere add nothing. The
    engine's exact hypervolume (`evolution.pareto.hypervolume`) must agree to 1e-9
    relative, else RuntimeError: two independent implementations check each other."""
    moocore: Any = require("moocore")
    pts = np.asarray(points, dtype=float).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=float)
    value = float(moocore.hypervolume(pts, ref=ref)) if len(pts) else 0.0
    own = engine_hypervolume(pts, ref.tolist()) if len(pts) else 0.0
    if abs(value - own) > 1e-9 * max(1.0, abs(value)):
        raise RuntimeError(f"hypervolume: moocore {value!r} != evolution {own!r} on "
                           f"{len(pts)} points (reference {ref.tolist()})")
    return value


def summarise(rows: Sequence[Mapping[str, Any]], *, value: str, group: str, baseline: str,
              holm_over: str = "table") -> list[dict[str, Any]]:
    """One record per (``group``, algorithm) of per-seed ``rows`` (dicts with ``group``,
    "algorithm", "seed" and ``value``): n, the median of ``value`` and its 95%
    order-statistic interval (None with fewer than 6 seeds), and, for every algorithm
    but ``baseline``, the median difference to the baseline's, the probability of
    superiority over it (``P(A > B) + P(A = B) / 2``, larger ``value`` is better), the
    exact two-sided rank-sum p-value and its Holm adjustment: over all comparisons of the
    summary (``holm_over="table"``) or over each algorithm's comparisons, one per group
    (``"algorithm"``: one family per algorithm, as when each is a separate question)."""
    if holm_over not in HOLM_FAMILIES:
        raise ValueError(f"holm_over must be one of {list(HOLM_FAMILIES)}, got {holm_over!r}")
    by: dict[tuple[Any, str], list[float]] = {}
    for row in rows:
        by.setdefault((row[group], row["algorithm"]), []).append(float(row[value]))
    out: list[dict[str, Any]] = []
    for (g, algorithm), values in by.items():
        record: dict[str, Any] = {group: g, "algorithm": algorithm, "n": len(values),
                                  "median": float(np.median(values)), "lo": None,
                                  "hi": None, "coverage": None}
        if len(values) >= 6:
            mi = median_interval(values)
            record.update(lo=mi.lo, hi=mi.hi, coverage=mi.coverage)
        base = by.get((g, baseline))
        if algorithm != baseline and base is not None:
            test = rank_sum_test(values, base)
            record.update(baseline=baseline,
                          median_difference=record["median"] - float(np.median(base)),
                          superiority=test.superiority, p_value=test.p_value,
                          exact=test.exact)
        out.append(record)
    families: dict[str | None, list[dict[str, Any]]] = {}
    for r in out:
        if "p_value" in r:
            families.setdefault(r["algorithm"] if holm_over == "algorithm" else None,
                                []).append(r)
    for tested in families.values():
        for record, adjusted in zip(tested, holm([r["p_value"] for r in tested]), strict=True):
            record["p_holm"] = adjusted
    return out


def reuse_runs(path: str | Path | None, *, algorithms: Sequence[str], group: str,
               groups: Sequence[str], seeds: Sequence[int], settings: Mapping[str, Any],
               match: Sequence[str], scores: Sequence[str],
               rerun: Callable[[str, str, int], Mapping[str, Any]],
               ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The runs of ``algorithms`` for every ``groups`` x ``seeds`` in an earlier record of
    the same benchmark (the JSON `write_record` wrote), so that new algorithms can be
    compared with them without running them again, and the record of that reuse.

    The record's settings must equal ``settings`` in every key of ``match``, and the first
    recorded run of each algorithm, run again (``rerun(group, algorithm, seed)``, a row),
    must give the same ``scores`` exactly; else a ValueError, as for a missing run. No
    ``algorithms``: nothing is reused (``[]``, None)."""
    if not algorithms:
        return [], None
    try:
        record = read_json(path or "")
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    theirs = record.get("settings", {})
    differ = [f"{k}: {theirs.get(k)!r} there, {settings[k]!r} here" for k in match
              if theirs.get(k) != json.loads(json.dumps(settings[k]))]
    if differ:
        raise ValueError(f"{path}: runs made with other settings ({'; '.join(differ)})")
    by = {(r[group], r["algorithm"], r["seed"]): r for r in record.get("runs", [])}
    wanted = [(g, a, s) for g in groups for a in algorithms for s in seeds]
    missing = [w for w in wanted if w not in by]
    if missing:
        raise ValueError(f"{path}: no run for {len(missing)} of the {len(wanted)} "
                         f"({group}, algorithm, seed) needed, e.g. {missing[0]}")
    reproduced = []
    for algorithm in algorithms:
        first = by[next(w for w in wanted if w[1] == algorithm)]
        again = rerun(first[group], algorithm, first["seed"])
        got, want = [again[k] for k in scores], [first[k] for k in scores]
        if got != want:
            raise ValueError(f"{path}: {algorithm} on {first[group]}, seed {first['seed']}, "
                             f"re-run gives {dict(zip(scores, got, strict=True))}, recorded "
                             f"{dict(zip(scores, want, strict=True))}: its runs cannot be "
                             "reused")
        reproduced.append({k: again[k] for k in (group, "algorithm", "seed", *scores,
                                                 "seconds") if k in again})
    return ([dict(by[w]) for w in wanted],
            {"record": str(path), "algorithms": list(algorithms), "reproduced": reproduced})


def markdown_table(summary: Mapping[str, Any], *, digits: int = 4) -> str:
    """A summary (``{"value", "group", "baseline", "rows"}`` and optionally "holm_over",
    as the benchmarks record them) as a markdown table: one row per group and algorithm."""
    group, baseline = summary["group"], summary["baseline"]
    family = " per algorithm" if summary.get("holm_over") == "algorithm" else ""
    lines = [f"| {group} | algorithm | seeds | median {summary['value']} [95% interval] | "
             f"vs {baseline}: difference of medians, P(better), p (Holm{family}) |",
             "|---|---|---|---|---|"]
    for r in summary["rows"]:
        interval = ("" if r["lo"] is None
                    else f" [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}]")
        versus = ""
        if "p_value" in r:
            versus = (f"{r['median_difference']:+.{digits}f}, {r['superiority']:.2f}, "
                      f"{r['p_value']:.2g} ({r['p_holm']:.2g})")
        lines.append(f"| {r[group]} | {r['algorithm']} | {r['n']} | "
                     f"{r['median']:.{digits}f}{interval} | {versus} |")
    return "\n".join(lines)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record() -> dict[str, Any]:
    """Where the runs ran: CPU model and count, torch's CPU capability (the vector unit
    its kernels use), load average, Python and the versions of the libraries compared."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in ("numpy", "pymoo", "moocore", "nas-bench-graph",
                                              "torch")},
    }


def write_record(record: dict[str, Any], out: Path, name: str, runs_csv: str) -> None:
    """Writes a benchmark's ``out/name`` (its record, with the machine and the name of its
    per-run table) and ``out/runs_csv`` (one row per run, which `automoe.recompute` reads),
    both atomically, and prints each summary as a markdown table."""
    import pandas as pd

    record.update(machine=machine_record(), runs_csv=runs_csv)
    atomic_write_csv(pd.DataFrame(record["runs"]), out / runs_csv, float_format="%.12g")
    atomic_write_json(out / name, record)
    for summary in record["summaries"]:
        print(markdown_table(summary), end="\n\n")
    print(f"wrote {out / name} and {out / runs_csv}")


def comma_names(text: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``: a comma-separated command-line list."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_run_options(parser: argparse.ArgumentParser, *, record: str, same: str,
                    out: Path) -> None:
    """The options every benchmark script shares: ``--reuse`` an earlier `record` (made
    with the `same` settings), ``--holm-over``, ``--out`` (default `out`), ``--quiet``."""
    parser.add_argument("--reuse", default=None, metavar="RECORD.json",
                        help=f"an earlier {record}: the baselines not in --algorithms are "
                             f"taken from it (same {same})")
    parser.add_argument("--holm-over", choices=HOLM_FAMILIES, default="table",
                        help="Holm family: all comparisons of a table, or each algorithm's "
                             "(default table)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--quiet", action="store_true", help="no line per run on stderr")
