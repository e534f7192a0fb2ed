"""Pareto utilities on minimisation vectors: dominance, non-dominated sorting (optionally
with Deb's constraint domination), crowding distance and exact hypervolume.

All functions take ``points`` as an array-like of shape [N, M] (N points, M objectives,
every objective minimised; negate maximised ones first, see `objectives.Objective`).
NaN is rejected; +inf is allowed (a failed evaluation) and is dominated by anything finite.
Equal points never dominate each other, so all duplicates of a front point are on the front
(`non_dominated_mask` is the one front rule: the search, its tables and the plots use it).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

__all__ = [
    "dominates",
    "non_dominated_mask",
    "non_dominated_sort",
    "crowding_distance",
    "hypervolume",
    "nsga2_select",
]


def _as_points(points: object, name: str = "points") -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape [N, M], got {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: NaN objective values (map failures to +inf first)")
    return arr


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when a is no worse than b everywhere and strictly better somewhere."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a_arr <= b_arr) and np.any(a_arr < b_arr))


def non_dominated_mask(points: object) -> np.ndarray:
    """[N] bool: True for points no other point dominates (duplicates are all kept).

    Sweep in lexicographic order: a point can only be dominated by one that sorts before
    it, so each point is compared with the current front only (O(N·F·M)).
    """
    pts = _as_points(points)
    n = len(pts)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort(pts.T[::-1])
    front: list[int] = []
    for i in order:
        if front:
            f = pts[front]
            dominated = np.all(f <= pts[i], axis=1) & np.any(f < pts[i], axis=1)
            if dominated.any():
                continue
        front.append(int(i))
        mask[i] = True
    return mask


def _dominance_matrix(pts: np.ndarray) -> np.ndarray:
    """[N, N] bool, D[i, j] = point i dominates point j."""
    le = np.all(pts[:, None, :] <= pts[None, :, :], axis=2)
    lt = np.any(pts[:, None, :] < pts[None, :, :], axis=2)
    return le & lt


def non_dominated_sort(
    points: object, violations: Sequence[float] | np.ndarray | None = None
) -> list[list[int]]:
    """Fronts of point indices, best first (each front in ascending index order).

    Without ``violations`` this is Pareto non-dominated sorting (Deb's fast sort on a
    dominance matrix). With ``violations`` ([N], >= 0, 0 = feasible) it sorts under Deb's
    constraint domination: a feasible point dominates every infeasible one, and of two
    infeasible points the one with the smaller total violation dominates. Feasible fronts
    therefore come first, then one front per distinct violation value, ascending.
    """
    pts = _as_points(points)
    n = len(pts)
    if violations is None:
        feasible = np.arange(n)
        infeasible = np.arange(0)
        viol = np.zeros(n)
    else:
        viol = np.asarray(violations, dtype=float)
        if viol.shape != (n,):
            raise ValueError(f"violations: expected shape ({n},), got {viol.shape}")
        if np.isnan(viol).any() or (viol < 0).any():
            raise ValueError("violations: must be >= 0 and not NaN")
        feasible = np.flatnonzero(viol == 0)
        infeasible = np.flatnonzero(viol > 0)
    fronts: list[list[int]] = []
    if len(feasible):
        sub = pts[feasible]
        dom = _dominance_matrix(sub)
        counts = dom.sum(axis=0)  # how many points dominate each point
        remaining = np.ones(len(sub), dtype=bool)
        while remaining.any():
            current = np.flatnonzero(remaining & (counts == 0))
            fronts.append([int(feasible[i]) for i in current])
            remaining[current] = False
            counts = counts - dom[current].sum(axis=0)
    for value in np.unique(viol[infeasible]):
        fronts.append([int(i) for i in infeasible if viol[i] == value])
    return fronts


def crowding_distance(points: object) -> np.ndarray:
    """[N] NSGA-II crowding distance of the points of one front.

    Per objective, points are sorted; the two extremes get +inf and every other point the
    gap between its neighbours divided by the objective's range. Objectives whose range
    is 0 or not finite add nothing (but their extremes still get +inf).
    """
    pts = _as_points(points)
    n, m = pts.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for k in range(m):
        order = np.argsort(pts[:, k], kind="stable")
        values = pts[order, k]
        dist[order[0]] = dist[order[-1]] = np.inf
        span = values[-1] - values[0]
        if span == 0 or not np.isfinite(span):
            continue
        gaps = (values[2:] - values[:-2]) / span
        dist[order[1:-1]] += gaps
    return dist


def hypervolume(points: object, reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference`` [M].

    Points that do not strictly dominate the reference in every objective contribute
    nothing. M = 1 and 2 use a sweep; M >= 3 slices along the last objective (HSO), each
    slice being a (M-1)-dimensional hypervolume of the points below it: O(N^(M-1) log N).
    """
    pts = _as_points(points)
    ref = np.asarray(reference, dtype=float)
    if pts.size == 0:
        return 0.0
    if ref.shape != (pts.shape[1],):
        raise ValueError(f"reference: expected {pts.shape[1]} values, got shape {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference: must be finite, got {ref.tolist()}")
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[non_dominated_mask(pts)]
    return float(_hv(pts, ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    m = pts.shape[1]
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        xs, ys = pts[order, 0], pts[order, 1]
        xs_next = np.append(xs[1:], ref[0])
        best_y = np.minimum.accumulate(ys)
        return float(np.sum((xs_next - xs) * (ref[1] - best_y)))
    if m == 3:
        return _hv3(pts, ref)
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    z_next = np.append(pts[1:, -1], ref[-1])
    total = 0.0
    for i in range(len(pts)):
        width = z_next[i] - pts[i, -1]
        if width <= 0:
            continue
        below = pts[: i + 1, :-1]
        below = below[non_dominated_mask(below)]
        total += width * _hv(below, ref[:-1])
    return total


def nsga2_select(points: object, n: int, violations: Sequence[float] | np.ndarray | None = None
                 ) -> list[int]:
    """NSGA-II environmental selection: indices of the ``n`` survivors.

    Whole fronts are taken in order (constraint domination when ``violations`` is given);
    the front that does not fit is cut by descending crowding distance (ties: lower index
    first). Returned in selection order.
    """
    pts = _as_points(points)
    if not 0 <= n <= len(pts):
        raise ValueError(f"nsga2_select: n={n} must be in 0..{len(pts)}")
    chosen: list[int] = []
    for front in non_dominated_sort(pts, violations):
        if len(chosen) + len(front) <= n:
            chosen.extend(front)
            continue
        crowd = crowding_distance(pts[front])
        order = sorted(range(len(front)), key=lambda j: (-crowd[j], front[j]))
        chosen.extend(front[j] for j in order[: n - len(chosen)])
        break
    return chosen


def _hv3(pts: np.ndarray, ref: np.ndarray) -> float:
    """3-D sweep along z: keeps the x-y staircase of the points seen so far (sorted by x,
    y strictly decreasing), so each slice costs O(F) instead of a fresh 2-D hypervolume."""
    order = np.argsort(pts[:, 2], kind="stable")
    pts = pts[order]
    z_next = np.append(pts[1:, 2], ref[2])
    xs: list[float] = []
    ys: list[float] = []
    area = total = 0.0
    for (x, y, z), z1 in zip(pts.tolist(), z_next.tolist(), strict=True):
        j = bisect.bisect_right(xs, x)
        if not (j > 0 and ys[j - 1] <= y):  # not weakly dominated in x-y: insert
            k = end = bisect.bisect_left(xs, x)
            while end < len(xs) and ys[end] >= y:
                end += 1
            xs[k:end] = [x]
            ys[k:end] = [y]
            area = sum(
                (x_hi - x_lo) * (ref[1] - y_lo)
                for x_lo, x_hi, y_lo in zip(xs, [*xs[1:], ref[0]], ys, strict=True)
            )
        total += (z1 - z) * area
    return total
