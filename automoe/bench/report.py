"""Scores and summaries of benchmark runs: the exact hypervolume (moocore, checked against
the engine's own), medians with distribution-free intervals over seeds, rank-sum tests
against a baseline algorithm, a markdown table, and the machine the runs ran on."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from automoe.bench import require
from automoe.io_utils import atomic_write_csv, atomic_write_json
from automoe.seed_stats import median_interval, rank_sum_test
from automoe.stats import holm
from evolution.pareto import hypervolume as engine_hypervolume

__all__ = ["exact_hypervolume", "summarise", "markdown_table", "machine_record",
           "write_record"]


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
              ) -> list[dict[str, Any]]:
    """One record per (``group``, algorithm) of per-seed ``rows`` (dicts with ``group``,
    "algorithm", "seed" and ``value``): n, the median of ``value`` and its 95%
    order-statistic interval (None with fewer than 6 seeds), and, for every algorithm
    but ``baseline``, the median difference to the baseline's, the probability of
    superiority over it (``P(A > B) + P(A = B) / 2``, larger ``value`` is better), the
    exact two-sided rank-sum p-value and its Holm adjustment over all comparisons of the
    summary."""
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
    tested = [r for r in out if "p_value" in r]
    for record, adjusted in zip(tested, holm([r["p_value"] for r in tested]), strict=True):
        record["p_holm"] = adjusted
    return out


def markdown_table(summary: Mapping[str, Any], *, digits: int = 4) -> str:
    """A summary (``{"value", "group", "baseline", "rows"}``, as the benchmarks record
    them) as a markdown table: one row per group and algorithm."""
    group, baseline = summary["group"], summary["baseline"]
    lines = [f"| {group} | algorithm | seeds | median {summary['value']} [95% interval] | "
             f"vs {baseline}: difference of medians, P(better), p (Holm) |",
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
