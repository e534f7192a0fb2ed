"""Which subnets of a search's front to retrain: K of them spread along the front's cost axis.

Pure functions of the result tables (no Ray, no torch), so the choice can be shown before
anything is trained (``automoe retrain --dry-run``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from automoe.search.objectives import get_metric

__all__ = ["COST_METRICS", "cost_column", "spread_indices", "choose_keys"]

COST_METRICS = ("flops", "params", "latency", "latency_ort", "predicted_latency")


def cost_column(objectives: Sequence[str]) -> str:
    """The table column of the run's first cost objective (FLOPs, params, latency,
    predicted latency), else of its first objective. `objectives` as in search.json
    (``"flops"``, ``"loss:min"``, ...)."""

    if not objectives:
        raise ValueError("search.json: the run has no objectives")
    metrics = [get_metric(o.split(":")[0], where="search.json objectives") for o in objectives]
    costs = [m for m in metrics if m.name in COST_METRICS]
    return (costs or metrics)[0].column


def spread_indices(values: Sequence[float], k: int) -> list[int]:
    """Indices (ascending) of the `k` values nearest to k evenly spaced targets, min to max.

    Exactly: among all k-subsets, the one whose sorted values are closest in total absolute
    distance to the targets ``lo + i (hi - lo) / (k - 1)``, i = 0..k-1 (matching sorted values
    to sorted targets is the optimal matching for this distance); ties go to the subset that
    is lexicographically first in ``sorted(range(n), key=(value, index))`` positions. Both
    extremes are in it: swapping the first chosen value for the minimum only lowers the
    distance (and likewise for the maximum). ``k >= n`` gives all indices; ``k == 1`` gives
    [0] (the caller's first row). A dynamic programme over (values seen, values chosen),
    O(n k) states.
    """
    n = len(values)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if any(not math.isfinite(float(v)) for v in values):
        raise ValueError("spread_indices: the values must be finite")
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    order = sorted(range(n), key=lambda i: (values[i], i))
    lo, hi = float(values[order[0]]), float(values[order[-1]])
    targets = [lo + i * (hi - lo) / (k - 1) for i in range(k)]
    # best[j]: (distance, positions in `order`) of the best j-subset of the values seen
    best: list[tuple[float, tuple[int, ...]]] = [(math.inf if j else 0.0, ())
                                                 for j in range(k + 1)]
    for pos, i in enumerate(order):
        for j in range(min(k, pos + 1), 0, -1):  # downwards: each value is used once
            prev = best[j - 1]
            if prev[0] < math.inf:
                cand = (prev[0] + abs(float(values[i]) - targets[j - 1]), prev[1] + (pos,))
                if cand < best[j]:
                    best[j] = cand
    return sorted(order[p] for p in best[k][1])


def choose_keys(pareto: pd.DataFrame, *, top: int, cost: str) -> list[str]:
    """`top` keys of a front table (``pareto.csv``: feasible rows, best first by the first
    objective) spread along column `cost` (`spread_indices`), in the table's order.
    ``top == 1`` picks the first row (the best by the run's first objective)."""
    if cost not in pareto:
        raise ValueError(f"pareto.csv has no column {cost!r} (the run's cost objective)")
    front = pareto[pareto["feasible"].astype(bool)] if "feasible" in pareto else pareto
    front = front.reset_index(drop=True)
    if front.empty:
        raise ValueError("pareto.csv: the front holds no feasible subnet")
    picked = spread_indices(front[cost].astype(float).tolist(), top)
    return [str(front["key"][i]) for i in picked]
