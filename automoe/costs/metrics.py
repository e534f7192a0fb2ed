"""Accuracy metrics for cost predictors (MAPE, RMSE, Kendall's tau-b) and the latency
sample statistics (median, HAT's trimmed mean, spread); numpy only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mape", "rmse", "kendall_tau", "regression_report", "trimmed_mean", "summarize"]


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute percentage error in percent; targets must be non-zero."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if np.any(t == 0):
        raise ValueError("mape: a target is 0 (undefined relative error)")
    return float(np.mean(np.abs(p - t) / np.abs(t)) * 100.0)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either ranking are corrected for); O(n²) memory, meant for
    held-out sets of a few thousand at most. Returns nan when either side is constant."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau: expected two 1-D arrays of one length, got {a.shape}, {b.shape}")
    iu = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[iu]
    db = np.sign(b[:, None] - b[None, :])[iu]
    n_a = np.count_nonzero(da)
    n_b = np.count_nonzero(db)
    if n_a == 0 or n_b == 0:
        return float("nan")
    return float(np.sum(da * db) / np.sqrt(float(n_a) * float(n_b)))


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """MAPE (%), RMSE (target units) and Kendall tau (None when undefined: fewer than 2
    rows or a constant side) of predictions on one held-out set."""
    tau = kendall_tau(y_true, y_pred) if len(y_true) > 1 else float("nan")
    return {
        "mape": mape(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "kendall_tau": tau if np.isfinite(tau) else None,  # None: undefined (JSON null)
        "n": int(len(y_true)),
    }


def trimmed_mean(samples: Sequence[float], frac: float = 0.1) -> float:
    """HAT's statistic: sort, drop ``int(n·frac)`` samples at each end, average the rest.
    Never empty: with fewer than 10 samples nothing is dropped (AutoMoE's version divides
    by zero there)."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("trimmed_mean: no samples")
    k = int(len(xs) * frac)
    if len(xs) - 2 * k < 1:
        k = (len(xs) - 1) // 2
    return float(np.mean(xs[k : len(xs) - k]))


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """median, trimmed mean (10–90 %), mean, std (population), p10, p90, cv = std/mean."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize: no samples")
    mean = float(x.mean())
    std = float(x.std())
    return {
        "median": float(np.median(x)),
        "trimmed_mean": trimmed_mean(x.tolist()),
        "mean": mean,
        "std": std,
        "p10": float(np.percentile(x, 10)),
        "p90": float(np.percentile(x, 90)),
        "cv": std / mean if mean > 0 else math.nan,
        "n": int(x.size),
    }
