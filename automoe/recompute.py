"""Recompute every committed p-value and interval from the stored per-sentence scores.

A reader who doubts a table runs ``python scripts/recompute_stats.py results/``: each
comparison table (a search's ``comparisons.csv`` beside ``sentences/comparisons/``) is
recomputed row by row from the two systems' archives (`automoe.search.compare.paired_row`,
Holm over the table), and each fidelity study (``fidelity.json`` beside ``fidelity.csv``,
``standalone.csv`` and ``sentences/``) has its per-model losses recomputed from the archives
and its whole report from the two tables (`automoe.fidelity.agreement_report`); each
comparison of supernet variants (``variants.json``) is made again from its studies' tables
(`automoe.supernet_variants.compare_variants`); each search
benchmark (``bench_*.json`` naming its per-run table) has its summaries made again from
that table. Every resampling is seeded, so a match is exact up to the tables' printed
precision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automoe.bench.report import summarise
from automoe.fidelity_report import agreement_report
from automoe.io_utils import read_json
from automoe.run_dir import COMPARISONS, RunDir
from automoe.search.compare import SENTENCES, paired_row, with_holm
from automoe.sentences import load_sentence_scores
from automoe.stats import loss_with_se
from automoe.supernet_variants import compare_variants
from search_spaces.files import strict_json

__all__ = ["recompute_comparisons", "recompute_fidelity", "recompute_variants",
           "recompute_bench", "recompute_all"]

_RTOL = 1e-6  # the tables print 10 significant digits


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None or _nan(a) and _nan(b)
    if isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
        return a == b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=_RTOL, abs_tol=1e-9)


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def recompute_comparisons(run_dir: str | Path) -> list[str]:
    """Mismatches between ``run_dir/comparisons.csv`` and the same rows recomputed from
    ``run_dir/sentences/comparisons/KEY.npz`` ([] when every number is reproduced)."""
    run = Path(run_dir)
    table = RunDir.at(run).read_optional(COMPARISONS, dtype={"key": str, "baseline_key": str})
    if table is None:
        raise FileNotFoundError(f"{run / COMPARISONS}: no such file")
    archives: dict[str, dict[str, np.ndarray]] = {}

    def archive(key: str) -> dict[str, np.ndarray]:
        if key not in archives:
            archives[key] = load_sentence_scores(run / SENTENCES / f"{key}.npz")
        return archives[key]

    rows = [{"key": r["key"], "baseline_key": r["baseline_key"],
             **paired_row(archive(r["key"]), archive(r["baseline_key"]))}
            for _, r in table.iterrows()]
    again = with_holm(pd.DataFrame(rows), ("loss", "bleu", "chrf"))
    out = []
    for col in again.columns:
        if col in ("key", "baseline_key", "holm_family"):
            continue
        for i, (got, want) in enumerate(zip(again[col], table[col], strict=True)):
            if not _close(got, want):
                out.append(f"{run / COMPARISONS} row {i} {col}: table {want!r}, "
                           f"recomputed {got!r}")
    return out


def _walk(a: Any, b: Any, where: str) -> Iterator[str]:
    """Where two JSON-like values differ (numbers within the tables' precision)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _walk(a.get(k), b.get(k), f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk(x, y, f"{where}[{i}]")
    elif not _close(a, b):
        yield f"{where}: recorded {a!r}, recomputed {b!r}"


def recompute_fidelity(study_dir: str | Path) -> list[str]:
    """Mismatches between a fidelity study's files and what its per-sentence archives and
    tables give again ([] when every number is reproduced)."""
    study = Path(study_dir)
    table = pd.read_csv(study / "fidelity.csv", dtype={"key": str})
    standalone = pd.read_csv(study / "standalone.csv", dtype={"key": str})
    out = []
    for _, row in table.iterrows():
        arrays = load_sentence_scores(study / "sentences" / "inherited" / f"{row['key']}.npz")
        loss, se = loss_with_se(arrays["loss"], arrays["tokens"])
        for name, got in (("inherited_loss", loss), ("inherited_loss_se", se)):
            if not _close(got, row[name]):
                out.append(f"{study / 'fidelity.csv'} {row['key']} {name}: table "
                           f"{row[name]!r}, recomputed {got!r}")
    recorded = read_json(study / "fidelity.json")
    borrowed = bool((recorded.get("protocol") or {}).get("standalone_from"))
    for _, row in standalone.iterrows():
        archive = study / "sentences" / row["job"] / f"{row['key']}.npz"
        if borrowed and not archive.parent.is_dir():
            continue  # a variant's standalone models are its lender's, checked there
        arrays = load_sentence_scores(archive)
        loss, se = loss_with_se(arrays["loss"], arrays["tokens"])
        for name, got in (("standalone_loss", loss), ("standalone_loss_se", se)):
            if not _close(got, row[name]):
                out.append(f"{study / 'standalone.csv'} {row['key']} {row['job']} {name}: "
                           f"table {row[name]!r}, recomputed {got!r}")
    again = agreement_report(table, standalone)
    for key, value in again.items():
        out += list(_walk(recorded.get(key), _json(value), f"{study / 'fidelity.json'}:{key}"))
    return out


def recompute_bench(path: str | Path) -> list[str]:
    """Mismatches between a search benchmark's JSON (``scripts/bench_pymoo.py``,
    ``scripts/bench_nasbench_graph.py``) and its summaries made again from the per-run
    table beside it (its ``runs_csv``): medians, order-statistic intervals, rank-sum
    p-values and their Holm adjustment over the family each summary names
    (`automoe.bench.report.summarise`)."""
    path = Path(path)
    record = read_json(path)
    table = pd.read_csv(path.parent / record["runs_csv"])
    rows = table.to_dict("records")
    out = list(_walk(record["runs"], _json(rows), f"{path}:runs"))
    for i, entry in enumerate(record["summaries"]):
        again = summarise(rows, value=entry["value"], group=entry["group"],
                          baseline=entry["baseline"],
                          holm_over=entry.get("holm_over", "table"))
        out += list(_walk(entry["rows"], _json(again), f"{path}:summaries[{i}]"))
    return out


def recompute_variants(path: str | Path) -> list[str]:
    """Mismatches between a supernet-variant comparison (``variants.json``,
    `automoe.supernet_variants.compare_variants`) and the same comparison made again from
    the fidelity tables of its studies, found beside it by their directory names; each
    variant's standalone table must be its reference's (the models they share)."""
    path = Path(path)
    recorded = read_json(path)
    studies = {name: path.parent / Path(stored).name
               for name, stored in recorded["studies"].items()}
    reference = studies[recorded["reference"]]
    lent = pd.read_csv(reference / "standalone.csv", dtype={"key": str})
    out = []
    for name, study in studies.items():
        table = pd.read_csv(study / "standalone.csv", dtype={"key": str})
        same = table.shape == lent.shape and all(
            np.allclose(table[c], lent[c], rtol=_RTOL, equal_nan=True) if table[c].dtype.kind == "f"
            else (table[c] == lent[c]).all() for c in lent.columns)
        if not same:
            out.append(f"{study / 'standalone.csv'}: not the standalone models of "
                       f"{reference} (variant {name!r})")
    again = compare_variants(studies, reference=recorded["reference"],
                             resamples=recorded.get("resamples", 2000))
    for key, value in again.items():
        if key not in ("studies", "resamples"):  # the run's paths; an input
            out += list(_walk(recorded.get(key), _json(value), f"{path}:{key}"))
    return out


def _json(value: Any) -> Any:
    """`value` as strict JSON reads it back (NaN as None, tuples as lists)."""
    return json.loads(json.dumps(strict_json(value)))


def recompute_all(root: str | Path) -> tuple[list[Path], list[str]]:
    """(the tables checked, every mismatch) under `root`: each run dir with comparisons and
    their archives, each fidelity study with its archives, each comparison of supernet
    variants with its studies' tables, each search benchmark with its per-run table."""
    root = Path(root)
    checked: list[Path] = []
    out: list[str] = []
    for path in sorted(root.rglob(COMPARISONS)):
        if (path.parent / SENTENCES).is_dir():
            checked.append(path)
            out += recompute_comparisons(path.parent)
    for path in sorted(root.rglob("fidelity.json")):
        if (path.parent / "sentences").is_dir() and (path.parent / "standalone.csv").is_file():
            checked.append(path)
            out += recompute_fidelity(path.parent)
    for path in sorted(root.rglob("variants.json")):
        checked.append(path)
        out += recompute_variants(path)
    for path in sorted(root.rglob("bench_*.json")):
        if "runs_csv" in read_json(path):
            checked.append(path)
            out += recompute_bench(path)
    return checked, out
