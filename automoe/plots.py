"""Pareto-front plots drawn from search result tables (never inside the search loop).

Input is one or more search runs, each a `candidates.csv` (one row per evaluated subnet) and
its `search.json` (settings and protocols). For every requested (x, y) pair the figure
shows all candidates faintly, each run's non-dominated front as a highlighted step line, dense
and MoE subnets with different markers, reference baselines as stars and, when the run was
retrained, the retrained scores of the front as a second series. A run with paired tests
(``comparisons.csv``) also gets, per reference subnet, the figure of what the tests compare:
each front subnet's difference to that reference (dev loss, BLEU, chrF) with its 95% paired
interval against the subnet's cost, filled where Holm's adjustment keeps it significant.
The unpaired error bars of the front plots are far wider than these: two subnets scored on
the same sentences share most of their noise.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automoe.io_utils import atomic_path
from automoe.metrics import METRICS, by_column
from automoe.plot_axes import Axis, axes, axis_label

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
from automoe.run_dir import BASELINES, COMPARISONS, RETRAINED, RunDir, read_run
from evolution.pareto import non_dominated_mask

__all__ = ["RunTable", "load_run", "pareto_mask", "plot_front", "plot_runs", "default_pairs",
           "paired_points", "plot_paired"]



def _pyplot() -> Any:
    """matplotlib's pyplot on the headless backend (plots are files, never windows);
    imported here, not at the top, so that importing this module stays cheap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class RunTable:
    """One search run's evaluated candidates and its metadata."""

    label: str
    candidates: pd.DataFrame
    settings: dict
    comparisons: pd.DataFrame | None = None


def load_run(run_dir: str | Path, label: str | None = None) -> RunTable:
    """Reads RUN_DIR/candidates.csv and the optional search.json (the one run reader,
    `automoe.run_dir.read_run`), plus the optional ``baselines.csv`` (rows with origin
    "baseline") and ``retrained.csv`` (column ``bleu_retrained``); every table with ``key``
    as text. Raises FileNotFoundError if candidates.csv is missing."""
    run = read_run(run_dir, need_meta=False)
    table, settings = run.candidates, run.meta
    files = RunDir.at(run.path)
    retrained = files.read_optional(RETRAINED)
    if retrained is not None:
        table = table.drop(columns=["bleu_retrained"], errors="ignore").merge(
            retrained[["key", "bleu_retrained"]], on="key", how="left")
    base = files.read_optional(BASELINES)  # the space's reference subnets, scored by the search
    if base is not None:
        table = pd.concat([table, base.assign(origin="baseline")], ignore_index=True)
    paired = files.read_optional(COMPARISONS, dtype={"key": str, "baseline_key": str})
    if paired is not None:
        table = _with_front_bleu(table, paired)
    return RunTable(label or settings.get("label") or run.path.name, table, settings, paired)


_FRONT_SCORES = ("bleu", "bleu_lo", "bleu_hi", "chrf", "chrf_lo", "chrf_hi")


def _with_front_bleu(table: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """A search on loss translates only its front and the baselines (comparisons.csv): their
    BLEU/chrF and intervals fill the columns the candidates lack (other rows stay NaN)."""
    missing = [c for c in _FRONT_SCORES if c not in table and c in comparisons]
    if not missing:
        return table
    scores = pd.concat([
        comparisons[["key", *missing]],
        comparisons[["baseline_key", *(f"{c}_baseline" for c in missing)]].set_axis(
            ["key", *missing], axis=1)]).drop_duplicates("key").set_index("key")
    out = table.copy()
    for c in missing:
        out[c] = out["key"].astype(str).map(scores[c])
    return out


def pareto_mask(x: np.ndarray, y: np.ndarray, *, x_max: bool, y_max: bool) -> np.ndarray:
    """Boolean mask of the non-dominated points of (x, y) under the given directions: the
    search's own rule (`evolution.pareto.non_dominated_mask`, duplicates of a front point
    are all on the front), with NaN rows never on the front.

    Args:
        x, y: [N] objective values.
    """
    points = np.column_stack([-x if x_max else x, -y if y_max else y]).astype(float)
    valid = ~np.isnan(points).any(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    mask[valid] = non_dominated_mask(points[valid])
    return mask


def _axis_label(axis: Axis, settings: dict, width: int = 100) -> str:
    """The axis label with its protocol, wrapped so that it fits the figure."""
    return textwrap.fill(axis_label(axis, settings.get("protocols", {})), width)


def _title(runs: Sequence[RunTable], x: str, y: str) -> str:
    """``BLEU vs GFLOPs`` plus where the latency was measured, when it was."""
    known = axes()
    title = f"{known[y].title} vs {known[x].title}"
    for column in ("latency_ms", "latency_ort_ms"):
        info = column.replace("_ms", "_device")
        devices = {str(d).split(" [")[0] for r in runs if info in r.candidates
                   for d in r.candidates[info].dropna().unique()}
        if column in (x, y) and devices:
            title += f"  (latency measured on {'; '.join(sorted(devices))})"
    return title


def _dense(table: pd.DataFrame) -> np.ndarray:
    if "is_dense" in table:
        return table["is_dense"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    return np.zeros(len(table), dtype=bool)


def default_pairs(runs: Sequence[RunTable]) -> list[tuple[str, str]]:
    """The runs' own objectives as (x, y) pairs: each quality objective (BLEU, dev loss) as
    y against each cost objective (FLOPs, latency, params) as x; FLOPs when a run has no
    cost objective. Unknown objective names (a newer version's) are skipped."""
    known = axes()
    pairs: list[tuple[str, str]] = []
    for run in runs:
        names = [str(o).split(":")[0] for o in run.settings.get("settings", run.settings)
                 .get("objectives", [])]
        metrics = [m for m in (METRICS.get(n) or by_column(n) for n in names)
                   if m is not None and m.column in known]
        quality = [m.column for m in metrics if not m.is_cost] or ["bleu"]
        if "bleu" not in quality and "bleu" in run.candidates:  # the front's, translated
            quality.append("bleu")
        costs = [m.column for m in metrics if m.is_cost] or ["flops"]
        pairs += [(x, y) for y in quality for x in costs if (x, y) not in pairs]
    return pairs


def _spread(t: pd.DataFrame, axis: Axis, values: np.ndarray) -> np.ndarray | None:
    """[2, N] error-bar lengths (below, above) of a column: its 95% interval (``_lo``/``_hi``
    columns), 1.96 standard errors (``_se``) or, for latency, p10-p90; None if unknown."""
    c = axis.column
    if f"{c}_lo" in t and f"{c}_hi" in t:
        lo, hi = (t[f"{c}_lo"].to_numpy(float) * axis.scale,
                  t[f"{c}_hi"].to_numpy(float) * axis.scale)
    elif f"{c}_se" in t:
        half = 1.96 * t[f"{c}_se"].to_numpy(float) * axis.scale
        lo, hi = values - half, values + half
    elif c in ("latency_ms", "latency_ort_ms") and f"{c[:-3]}_p10_ms" in t \
            and f"{c[:-3]}_p90_ms" in t:
        lo, hi = t[f"{c[:-3]}_p10_ms"].to_numpy(float), t[f"{c[:-3]}_p90_ms"].to_numpy(float)
    else:
        return None
    return np.nan_to_num(np.vstack([values - lo, hi - values]).clip(0))


def plot_front(ax: plt.Axes, runs: Sequence[RunTable], x: str, y: str) -> int:
    """Draws runs on one axes; returns the number of front points drawn."""
    xa, ya = axes()[x], axes()[y]
    colors = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, run in enumerate(runs):
        t = run.candidates
        if xa.column not in t or ya.column not in t:
            continue
        color = colors[i % len(colors)]
        origin = t["origin"].astype(str) if "origin" in t else pd.Series([""] * len(t))
        is_base = (origin == "baseline").to_numpy()
        xs = t[xa.column].to_numpy(dtype=float) * xa.scale
        ys = t[ya.column].to_numpy(dtype=float) * ya.scale
        dense = _dense(t)
        cand = ~is_base
        for sel, marker, kind in ((cand & dense, "o", "dense"), (cand & ~dense, "^", "MoE")):
            if sel.any():
                ax.scatter(xs[sel], ys[sel], s=14, alpha=0.25, color=color, marker=marker,
                           label=f"{run.label}: {kind} candidates")
        front = np.zeros(len(t), dtype=bool)  # the search's front: baselines are references
        front[cand] = pareto_mask(xs[cand], ys[cand], x_max=xa.maximize, y_max=ya.maximize)
        order = np.argsort(xs[front])
        ax.step(xs[front][order], ys[front][order], where="post", color=color, lw=1.5)
        for sel, marker in ((front & dense, "o"), (front & ~dense, "^")):
            if sel.any():
                ax.scatter(xs[sel], ys[sel], s=46, color=color, marker=marker,
                           edgecolor="black", linewidth=0.6, zorder=3)
        bars = front | is_base  # uncertainty where it matters: front and references
        xerr, yerr = _spread(t, xa, xs), _spread(t, ya, ys)
        if bars.any() and (xerr is not None or yerr is not None):
            ax.errorbar(xs[bars], ys[bars], xerr=None if xerr is None else xerr[:, bars],
                        yerr=None if yerr is None else yerr[:, bars], fmt="none",
                        ecolor=color, elinewidth=0.8, capsize=2, alpha=0.7, zorder=2)
        drawn += int(front.sum())
        ax.plot([], [], color=color, lw=1.5, marker="s", label=f"{run.label}: Pareto front")
        if is_base.any():
            ax.scatter(xs[is_base], ys[is_base], s=150, marker="*", color=color,
                       edgecolor="black", zorder=4, label=f"{run.label}: baselines")
            if "baseline" in t:
                for j, (bx, by, name) in enumerate(zip(xs[is_base], ys[is_base],
                                                       t["baseline"][is_base], strict=True)):
                    # alternate above/below: baselines often sit close together
                    ax.annotate(str(name), (bx, by), textcoords="offset points",
                                xytext=(5, 6 if j % 2 == 0 else -12), fontsize=7)
        if ya.column == "bleu" and "bleu_retrained" in t:
            rsel = t["bleu_retrained"].notna().to_numpy()
            if rsel.any():
                ax.scatter(xs[rsel], t["bleu_retrained"].to_numpy(dtype=float)[rsel], s=60,
                           marker="D", facecolor="none", edgecolor=color, zorder=4,
                           label=f"{run.label}: retrained (test BLEU)")
    settings = runs[0].settings if runs else {}
    ax.set_xlabel(_axis_label(xa, settings), fontsize=8)
    ax.set_ylabel(_axis_label(ya, settings, width=60), fontsize=8)
    ax.grid(alpha=0.3)
    return drawn


PAIRED_METRICS = (("loss", "dev loss difference (nats/token)"),
                  ("bleu", "BLEU difference"), ("chrf", "chrF difference"))


def paired_points(run: RunTable, baseline: str, metric: str, cost: str) -> pd.DataFrame:
    """What the paired tests of `run` against `baseline` compare, for one metric: one row
    per front subnet with ``x`` (its `cost` on the axis's scale), ``delta``, ``lo``, ``hi``
    (subnet - baseline and its 95% paired interval) and ``significant`` (Holm-adjusted
    p < 0.05; the raw p when the table has no Holm column)."""
    assert run.comparisons is not None
    rows = run.comparisons[run.comparisons["baseline"] == baseline]
    axis = axes()[cost]
    costs = run.candidates.drop_duplicates("key").set_index("key")[axis.column]
    p = rows[f"{metric}_p_holm"] if f"{metric}_p_holm" in rows else rows[f"{metric}_p"]
    return pd.DataFrame({"key": rows["key"].to_numpy(),
                         "x": costs.loc[rows["key"]].to_numpy(float) * axis.scale,
                         "delta": rows[f"{metric}_delta"].to_numpy(float),
                         "lo": rows[f"{metric}_delta_lo"].to_numpy(float),
                         "hi": rows[f"{metric}_delta_hi"].to_numpy(float),
                         "significant": (p < 0.05).to_numpy()})


def plot_paired(run: RunTable, baseline: str, cost: str) -> Any:
    """The figure of `paired_points` for every metric the comparisons hold (one panel each)."""
    plt = _pyplot()
    metrics = [(m, text) for m, text in PAIRED_METRICS
               if run.comparisons is not None and f"{m}_delta" in run.comparisons]
    fig, panels = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), dpi=120,
                               squeeze=False)
    for ax, (metric, text) in zip(panels[0], metrics, strict=True):
        pts = paired_points(run, baseline, metric, cost)
        err = np.vstack([pts["delta"] - pts["lo"], pts["hi"] - pts["delta"]]).clip(0)
        ax.errorbar(pts["x"], pts["delta"], yerr=err, fmt="none", ecolor="C0", capsize=2,
                    elinewidth=0.8)
        sig = pts["significant"].to_numpy(bool)
        ax.scatter(pts["x"][sig], pts["delta"][sig], color="C0", s=22, zorder=3,
                   label="Holm p < 0.05")
        ax.scatter(pts["x"][~sig], pts["delta"][~sig], facecolor="white", edgecolor="C0",
                   s=22, zorder=3, label="not significant")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlabel(_axis_label(axes()[cost], run.settings, width=45), fontsize=8)
        ax.set_ylabel(text, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{run.label}: front subnets minus '{baseline}' on the same dev sentences "
                 "(95% paired intervals)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_runs(
    runs: Sequence[RunTable],
    out_dir: str | Path,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Writes one figure per (x, y) pair that the runs have columns for (default: the
    runs' own objectives, `default_pairs`).

    Returns:
        The written files (``{y}_vs_{x}.{fmt}``), written atomically.
    """
    pairs = default_pairs(runs) if pairs is None else list(pairs)
    known = axes()
    pairs = [(x, y) for x, y in pairs if any(
        known[x].column in r.candidates and known[y].column in r.candidates for r in runs)]
    if not pairs:
        raise ValueError("no run has the columns for any of the plots asked")
    out = Path(out_dir)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.suffix not in (".png", ".svg"))
        if foreign:
            raise ValueError(f"-o {out}: holds files that are not plots ({', '.join(foreign[:3])}"
                             "); choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written: list[Path] = []
    for x, y in pairs:
        fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
        plot_front(ax, runs, x, y)
        ax.set_title(_title(runs, x, y), fontsize=10)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        written += _save(fig, out / f"{y}_vs_{x}", formats)
    for run in runs:  # what each run's paired tests compare
        if run.comparisons is None or run.comparisons.empty or not any(
                f"{m}_delta" in run.comparisons for m, _ in PAIRED_METRICS):
            continue
        cost = next((x for x, _ in pairs), "flops")
        prefix = f"{run.label}_" if len(runs) > 1 else ""
        for baseline in dict.fromkeys(run.comparisons["baseline"]):
            written += _save(plot_paired(run, str(baseline), cost),
                             out / f"{prefix}paired_vs_{baseline}", formats)
    return written


def _save(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Writes `fig` as ``stem.<fmt>`` for each format, atomically, and closes it."""
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(path)
    _pyplot().close(fig)
    return paths
