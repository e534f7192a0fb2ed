"""The fidelity study's report: pure functions of its two tables, so that anyone can
recompute it (`automoe.recompute`) and compare supernet variants on it
(`automoe.supernet_variants`).

`agreement_report(fidelity.csv, standalone.csv)`: per target (standalone dev loss, BLEU),
Kendall tau of the inherited scores and of the trivial proxies within FLOPs bands (pairs
inside a band, stratified bootstrap) and overall, the paired tests of inherited against the
best parameter proxy (within bands) and against FLOPs (overall), the seed ceiling, the
budget check, each inherited objective against both targets with its CPU seconds, and MoE
against dense per band and against the dense subnet nearest in total parameters. Every
predictor is oriented so that a higher value predicts a better subnet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automoe.io_utils import atomic_path
from automoe.stats import bootstrap_seed, rank_agreement, tau_difference

__all__ = ["FIDELITY_COLUMNS", "STANDALONE_COLUMNS", "PROXIES", "TARGETS", "OBJECTIVES",
           "agreement", "agreement_report", "objective_report", "moe_minus_dense",
           "moe_minus_param_matched_dense", "plot_study"]


FIDELITY_COLUMNS = ("key", "band", "role", "is_dense", "flops", "flops_min", "flops_max",
                    "flops_observed", "params_active", "params_total",
                    "inherited_loss", "inherited_loss_se", "inherited_bleu",
                    "inherited_bleu_lo", "inherited_bleu_hi", "inherited_chrf",
                    "standalone_loss", "standalone_loss_sd", "standalone_bleu",
                    "standalone_bleu_sd", "standalone_chrf", "standalone_seeds",
                    "loss_seconds", "bleu_seconds", "experts", "config")
STANDALONE_COLUMNS = ("key", "band", "is_dense", "job", "seed", "budget", "updates",
                      "standalone_loss", "standalone_loss_se", "standalone_bleu", "standalone_bleu_lo",
                      "standalone_bleu_hi", "standalone_chrf", "test_bleu", "test_chrf")
# predictor name -> (column, sign): sign * column grows with predicted quality
PROXIES = {"flops": ("flops", 1.0), "params_active": ("params_active", 1.0),
           "params_total": ("params_total", 1.0)}
# target -> (standalone column, sign, inherited column)
TARGETS = {"loss": ("standalone_loss", -1.0, "inherited_loss"),
           "bleu": ("standalone_bleu", 1.0, "inherited_bleu")}


def _oriented(table: pd.DataFrame, target: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(truth, predictors) of a target, each oriented so that higher means better."""
    column, sign, inherited = TARGETS[target]
    truth = sign * table[column].to_numpy(float)
    predictors = {"inherited": sign * table[inherited].to_numpy(float)}
    predictors.update({name: s * table[col].to_numpy(float)
                       for name, (col, s) in PROXIES.items()})
    return truth, predictors


def agreement(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, resamples: int
              ) -> dict[str, Any] | None:
    """`automoe.stats.rank_agreement` as a dict (pooled within `groups` when given); None
    where it is undefined (too few items or pairs)."""

    ok = np.isfinite(x) & np.isfinite(y)
    try:
        return rank_agreement(x[ok], y[ok], groups=None if groups is None else groups[ok],
                              resamples=resamples).to_dict()
    except ValueError:
        return None


def _tau_key(entry: dict[str, Any] | None) -> float:
    if entry is None or entry["tau"] is None or not math.isfinite(entry["tau"]):
        return -math.inf
    return float(entry["tau"])


def _pair_of_runs(standalone: pd.DataFrame, metric: str, first: tuple[int, int],
                  second: tuple[int, int]) -> pd.DataFrame:
    """Rows (key, band, a, b): `metric` of each key under (seed, budget) `first` and
    `second`, for the keys scored under both."""
    def pick(seed: int, budget: int) -> pd.Series:
        rows = standalone[(standalone["seed"] == seed) & (standalone["budget"] == budget)]
        return rows.set_index("key")[metric]

    a, b = pick(*first), pick(*second)
    both = [k for k in a.index if k in b.index]
    band = standalone.drop_duplicates("key").set_index("key")["band"]
    return pd.DataFrame({"key": both, "band": band.loc[both].to_numpy(),
                         "a": a.loc[both].to_numpy(float), "b": b.loc[both].to_numpy(float)})


def agreement_report(table: pd.DataFrame, standalone: pd.DataFrame, *, resamples: int = 2000
                     ) -> dict[str, Any]:
    """Rank agreement with the standalone scores, per target ("loss", "bleu").

    `table` has `FIDELITY_COLUMNS` (standalone scores: the mean over seeds at the base
    budget), `standalone` has `STANDALONE_COLUMNS`. Per target: ``within_band`` (tau pooled
    over the pairs inside each band, with stratified bootstrap intervals) of the inherited
    scores and of each proxy, and the paired test of tau(inherited) - tau(best parameter
    proxy); ``overall`` (every pair) with the test of tau(inherited) - tau(FLOPs);
    ``seed_ceiling`` (within-band tau between training seeds 0 and 1); ``budget_check``
    (within-band tau between the base and the doubled budget, and whether it reaches 0.7).
    """

    bands = table["band"].to_numpy()
    out: dict[str, Any] = {
        "n": int(len(table)), "bands": int(len(set(bands))),
        "orientation": "every predictor oriented so that higher predicts better (lower "
                       "standalone loss, higher standalone BLEU)"}
    for target, (column, sign, _) in TARGETS.items():
        truth, predictors = _oriented(table, target)
        within = {name: agreement(x, truth, bands, resamples) for name, x in predictors.items()}
        overall = {name: agreement(x, truth, None, resamples) for name, x in predictors.items()}
        best = max(("params_active", "params_total"), key=lambda n: _tau_key(within[n]))
        entry: dict[str, Any] = {"within_band": within, "overall": overall,
                                 "best_param_proxy": best}
        entry["within_band"]["inherited_minus_best_param_proxy"] = tau_difference(
            predictors["inherited"], predictors[best], truth, groups=bands, resamples=resamples)
        entry["overall"]["inherited_minus_flops"] = tau_difference(
            predictors["inherited"], predictors["flops"], truth, resamples=resamples)
        seeds = _pair_of_runs(standalone, column, (0, 1), (1, 1))
        entry["seed_ceiling"] = (None if len(seeds) < 3 else agreement(
            sign * seeds["a"].to_numpy(), sign * seeds["b"].to_numpy(),
            seeds["band"].to_numpy(), resamples))
        budgets = _pair_of_runs(standalone, column, (0, 1), (0, 2))
        check = (None if len(budgets) < 3 else agreement(
            sign * budgets["a"].to_numpy(), sign * budgets["b"].to_numpy(),
            budgets["band"].to_numpy(), resamples))
        entry["budget_check"] = {"subnets": int(len(budgets)), "within_band": check,
                                 "passes": None if check is None else bool(check["tau"] >= 0.7)}
        diff = table[TARGETS[target][2]].to_numpy(float) - table[column].to_numpy(float)
        entry["inherited_minus_standalone"] = {"mean": float(np.nanmean(diff)),
                                               "mean_abs": float(np.nanmean(np.abs(diff)))}
        out[target] = entry
    out["objectives"] = objective_report(table, resamples=resamples)
    out["moe_minus_dense"] = moe_minus_dense(standalone, resamples=resamples)
    out["moe_minus_param_matched_dense"] = moe_minus_param_matched_dense(
        table, resamples=resamples)
    out["cpu_seconds_per_subnet"] = {c: float(table[c].mean())
                                     for c in ("loss_seconds", "bleu_seconds")}
    return out


# inherited objective -> (column, sign, what its CPU time is): BLEU and chrF share one decoding
OBJECTIVES = {"loss": ("inherited_loss", -1.0, "loss_seconds"),
              "bleu": ("inherited_bleu", 1.0, "bleu_seconds"),
              "chrf": ("inherited_chrf", 1.0, "bleu_seconds")}


def objective_report(table: pd.DataFrame, *, resamples: int = 2000) -> dict[str, Any]:
    """Which inherited objective predicts the standalone scores best, and at what cost:
    per target (standalone loss, standalone BLEU) the within-band and overall tau of each
    inherited objective (loss, BLEU, chrF), and the mean CPU seconds per subnet of each
    (the loss pass; the decoding for BLEU and chrF)."""
    bands = table["band"].to_numpy()
    out: dict[str, Any] = {"cpu_seconds": {name: float(table[sec].mean())
                                           for name, (_, _, sec) in OBJECTIVES.items()}}
    for target, (column, sign, _) in TARGETS.items():
        truth = sign * table[column].to_numpy(float)
        out[target] = {name: {"within_band": agreement(s * table[col].to_numpy(float), truth,
                                                        bands, resamples),
                              "overall": agreement(s * table[col].to_numpy(float), truth,
                                                    None, resamples)}
                       for name, (col, s, _) in OBJECTIVES.items()}
    return out


def moe_minus_dense(standalone: pd.DataFrame, *, resamples: int = 2000, seed: int | None = None
                    ) -> dict[str, Any]:
    """Inside each band, mean standalone score of its MoE subnets minus that of its dense
    ones (base budget, every seed), with a 95% interval from a bootstrap over subnets inside
    each band (a subnet keeps all its seeds); per band and pooled (the mean of the bands'
    differences). Keys: "loss", "bleu"."""

    base = standalone[standalone["budget"] == 1]
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    out: dict[str, Any] = {}
    for metric in ("loss", "bleu"):
        col = f"standalone_{metric}"
        per_key = base.groupby("key").agg(band=("band", "first"), dense=("is_dense", "first"),
                                          value=(col, "mean"))
        bands: dict[str, Any] = {}
        draws = []
        for band, rows in per_key.groupby("band"):
            moe = rows.loc[~rows["dense"].astype(bool), "value"].to_numpy(float)
            dense = rows.loc[rows["dense"].astype(bool), "value"].to_numpy(float)
            if len(moe) == 0 or len(dense) == 0:
                continue
            boot = (moe[rng.integers(0, len(moe), size=(resamples, len(moe)))].mean(1)
                    - dense[rng.integers(0, len(dense), size=(resamples, len(dense)))].mean(1))
            lo, hi = np.percentile(boot, [2.5, 97.5])
            bands[str(band)] = {"delta": float(moe.mean() - dense.mean()), "lo": float(lo),
                                "hi": float(hi), "moe": int(len(moe)), "dense": int(len(dense))}
            draws.append(boot)
        pooled = None
        if draws:
            mean = np.mean(draws, axis=0)
            lo, hi = np.percentile(mean, [2.5, 97.5])
            pooled = {"delta": float(np.mean([b["delta"] for b in bands.values()])),
                      "lo": float(lo), "hi": float(hi)}
        out[metric] = {"per_band": bands, "pooled": pooled}
    return out


def moe_minus_param_matched_dense(table: pd.DataFrame, *, resamples: int = 2000,
                                  seed: int | None = None) -> dict[str, Any]:
    """Each MoE subnet against the dense subnet of the study (any band) nearest to it in
    total parameters (log scale): the mean standalone score difference (MoE - dense, means
    over seeds) with a 95% bootstrap interval over the MoE subnets, and the pairs with their
    parameter and FLOPs ratios. An MoE subnet holds more parameters than a dense one of
    equal FLOPs; this asks whether it beats a dense model of its size."""

    moe, dense = table[~table["is_dense"].astype(bool)], table[table["is_dense"].astype(bool)]
    if moe.empty or dense.empty:
        return {"pairs": [], "loss": None, "bleu": None}
    logp = np.log(dense["params_total"].to_numpy(float))
    pairs = []
    for _, row in moe.iterrows():
        d = dense.iloc[int(np.argmin(np.abs(logp - np.log(float(row["params_total"])))))]
        pairs.append({"moe": row["key"], "dense": d["key"],
                      "params_ratio": float(row["params_total"] / d["params_total"]),
                      "flops_ratio": float(row["flops"] / d["flops"]),
                      "loss": float(row["standalone_loss"] - d["standalone_loss"]),
                      "bleu": float(row["standalone_bleu"] - d["standalone_bleu"])})
    rng = np.random.default_rng(bootstrap_seed() if seed is None else seed)
    idx = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
    out: dict[str, Any] = {"pairs": pairs}
    for metric in ("loss", "bleu"):
        diffs = np.array([p[metric] for p in pairs])
        lo, hi = np.percentile(diffs[idx].mean(1), [2.5, 97.5])
        out[metric] = {"delta": float(diffs.mean()), "lo": float(lo), "hi": float(hi),
                       "n": len(pairs)}
    return out


def plot_study(table: pd.DataFrame, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    panels = (("loss", "inherited_loss", "standalone_loss", "dev loss (nats/token)"),
              ("bleu", "inherited_bleu", "standalone_bleu", "dev BLEU (greedy)"))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(1, table["band"].nunique())))
    for ax, (target, x, y, label) in zip(axes, panels, strict=True):
        for band, rows in table.groupby("band"):
            for dense, marker in ((False, "o"), (True, "s")):
                part = rows[rows["is_dense"].astype(bool) == dense]
                ax.errorbar(part[x], part[y], yerr=part[f"{y}_sd"].fillna(0), fmt=marker, ms=5,
                            capsize=2, color=colours[int(band)], alpha=0.85,
                            label=f"band {band} {'dense' if dense else 'MoE'}")
        w = report[target]["within_band"]["inherited"]
        o = report[target]["overall"]["inherited"]
        ceiling = report[target]["seed_ceiling"]
        text = (f"{label}\nwithin-band tau {_fmt(w)}; overall {_fmt(o)}"
                + (f"; seed ceiling {_fmt(ceiling)}" if ceiling else ""))
        ax.set_title(text, fontsize=8)
        ax.set_xlabel(f"inherited from the supernet ({label})", fontsize=9)
        ax.set_ylabel(f"trained alone, mean over seeds ± sd ({label})", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Supernet fidelity by FLOPs band: {len(table)} subnets, "
                 f"{table['band'].nunique()} bands", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _fmt(entry: dict[str, Any] | None) -> str:
    if entry is None or entry["tau"] is None or not math.isfinite(entry["tau"]):
        return "undefined"
    return f"{entry['tau']:.2f} [{entry['tau_lo']:.2f}, {entry['tau_hi']:.2f}]"
