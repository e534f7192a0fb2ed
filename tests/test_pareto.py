"""Pareto utilities against brute-force oracles: dominance by definition, non-dominated
sorting by repeated peeling (with and without Deb's constraint domination), hypervolume by
inclusion-exclusion (floats) and by counting unit cells (integer points), crowding distance
by a hand computation and its invariances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolution.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_mask,
    non_dominated_sort,
    nsga2_select,
)

# ---- oracles (plain Python, straight from the definitions) -----------------------------


def brute_dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def brute_constrained_dominates(a, b, va, vb) -> bool:
    if va == 0 and vb > 0:
        return True
    if va > 0 and vb > 0:
        return va < vb
    if va == 0 and vb == 0:
        return brute_dominates(a, b)
    return False


def brute_sort(points, violations=None) -> list[list[int]]:
    v = [0.0] * len(points) if violations is None else list(violations)
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [
            i
            for i in remaining
            if not any(
                brute_constrained_dominates(points[j], points[i], v[j], v[i]) for j in remaining
            )
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def hv_inclusion_exclusion(points, ref) -> float:
    total = 0.0
    for r in range(1, len(points) + 1):
        for subset in itertools.combinations(points, r):
            vol = 1.0
            for k in range(len(ref)):
                vol *= max(0.0, ref[k] - max(p[k] for p in subset))
            total += (-1) ** (r + 1) * vol
    return total


def hv_grid_count(points, ref) -> int:
    """Integer points >= 0: count the unit cells [c, c+1) dominated by some point."""
    grids = np.meshgrid(*[np.arange(r) for r in ref], indexing="ij")
    cells = np.stack([g.ravel() for g in grids], axis=1)
    covered = np.zeros(len(cells), dtype=bool)
    for p in points:
        covered |= np.all(cells >= np.asarray(p), axis=1)
    return int(covered.sum())


def points_strategy(dims: int, max_n: int, max_value: int = 6):
    return st.lists(
        st.tuples(*[st.integers(0, max_value) for _ in range(dims)]), min_size=0, max_size=max_n
    )


# ---- dominance and sorting --------------------------------------------------------------


def test_dominates_by_hand():
    assert dominates([1, 2], [2, 2])
    assert not dominates([1, 2], [1, 2])  # equal: no strict improvement
    assert not dominates([1, 3], [2, 2])  # trade-off
    assert dominates([0, 0, 0], [0, 0, np.inf])  # a failed evaluation is dominated


@settings(max_examples=80, deadline=None)
@given(dims=st.integers(1, 4), data=st.data())
def test_non_dominated_sort_matches_brute_force(dims, data):
    points = data.draw(points_strategy(dims, 25))
    fronts = non_dominated_sort(np.array(points, dtype=float).reshape(len(points), dims))
    assert fronts == brute_sort(points)
    mask = non_dominated_mask(np.array(points, dtype=float).reshape(len(points), dims))
    assert sorted(np.flatnonzero(mask).tolist()) == (fronts[0] if fronts else [])


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_constrained_sort_matches_brute_force(data):
    points = data.draw(points_strategy(2, 20, 4))
    violations = data.draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5]), min_size=len(points), max_size=len(points)
        )
    )
    fronts = non_dominated_sort(np.array(points, dtype=float).reshape(-1, 2), violations)
    assert fronts == brute_sort(points, violations)
    # feasible points always come before every infeasible one
    order = [i for f in fronts for i in f]
    feasible_positions = [order.index(i) for i, v in enumerate(violations) if v == 0]
    infeasible_positions = [order.index(i) for i, v in enumerate(violations) if v > 0]
    if feasible_positions and infeasible_positions:
        assert max(feasible_positions) < min(infeasible_positions)


def test_sort_rejects_nan_and_bad_violations():
    with pytest.raises(ValueError, match="NaN"):
        non_dominated_sort([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="violations"):
        non_dominated_sort([[0.0, 1.0]], violations=[-1.0])
    with pytest.raises(ValueError, match="shape"):
        non_dominated_sort([[0.0, 1.0]], violations=[0.0, 0.0])


# ---- hypervolume ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(dims=st.integers(1, 4), data=st.data())
def test_hypervolume_matches_inclusion_exclusion(dims, data):
    points = data.draw(
        st.lists(
            st.tuples(*[st.floats(-2.0, 3.0, allow_nan=False) for _ in range(dims)]),
            min_size=0,
            max_size=7,
        )
    )
    ref = data.draw(st.tuples(*[st.floats(0.0, 3.5) for _ in range(dims)]))
    got = hypervolume(np.array(points, dtype=float).reshape(len(points), dims), ref)
    assert got == pytest.approx(hv_inclusion_exclusion(points, ref), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(dims=st.sampled_from([2, 3]), data=st.data())
def test_hypervolume_matches_cell_count_on_larger_integer_sets(dims, data):
    points = data.draw(points_strategy(dims, 40, 7))
    ref = (8,) * dims
    got = hypervolume(np.array(points, dtype=float).reshape(len(points), dims), ref)
    assert got == hv_grid_count(points, ref)


def test_hypervolume_by_hand_and_edge_cases():
    # 2-D staircase: (1,3), (2,2), (3,1) with ref (4,4): 3 + 2 + 1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == 6.0
    # a dominated point and a point outside the reference change nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [5, 0]], [4, 4]) == 6.0
    assert hypervolume(np.zeros((0, 3)), [1, 1, 1]) == 0.0
    assert hypervolume([[0, 0, 0]], [1, 2, 3]) == 6.0
    assert hypervolume([[0, 0, np.inf]], [1, 1, 1]) == 0.0  # failed evaluation
    with pytest.raises(ValueError, match="reference"):
        hypervolume([[0, 0]], [1, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[0, 0]], [1, np.inf])


def test_hypervolume_3d_large_front_matches_cell_count():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 12, size=(300, 3))
    assert hypervolume(points.astype(float), (12, 12, 12)) == hv_grid_count(points, (12, 12, 12))


# ---- crowding distance and survivor selection -------------------------------------------


def test_crowding_distance_by_hand():
    # objective 0 range 4, objective 1 range 8
    pts = np.array([[0, 8], [1, 6], [3, 2], [4, 0]], dtype=float)
    got = crowding_distance(pts)
    assert np.isinf(got[0]) and np.isinf(got[3])
    assert got[1] == pytest.approx((3 - 0) / 4 + (8 - 2) / 8)
    assert got[2] == pytest.approx((4 - 1) / 4 + (6 - 0) / 8)
    assert np.all(np.isinf(crowding_distance([[1, 2], [3, 4]])))
    # a constant objective contributes nothing
    flat = crowding_distance([[0, 5], [1, 5], [2, 5]])
    assert flat[1] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_crowding_invariant_to_affine_scaling_and_permutation(data):
    n = data.draw(st.integers(3, 12))
    pts = np.array(
        data.draw(
            st.lists(
                st.tuples(st.integers(0, 50), st.integers(0, 50)),
                min_size=n,
                max_size=n,
                unique_by=(lambda p: p[0], lambda p: p[1]),
            )
        ),
        dtype=float,
    )
    base = crowding_distance(pts)
    scaled = pts * np.array([3.0, 0.25]) + np.array([-7.0, 100.0])
    np.testing.assert_allclose(crowding_distance(scaled), base)
    perm = np.array(data.draw(st.permutations(range(n))))
    np.testing.assert_allclose(crowding_distance(pts[perm]), base[perm])


def brute_crowding(points):
    n, m = len(points), len(points[0])
    dist = [0.0] * n
    for k in range(m):
        order = sorted(range(n), key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = float("inf")
        for pos in range(1, n - 1):
            if hi > lo:
                dist[order[pos]] += (points[order[pos + 1]][k] - points[order[pos - 1]][k]) / (
                    hi - lo
                )
    return dist


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_nsga2_select_matches_brute_force(data):
    points = data.draw(points_strategy(2, 20, 5).filter(lambda p: len(p) >= 1))
    violations = data.draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0]), min_size=len(points), max_size=len(points)
        )
    )
    n = data.draw(st.integers(0, len(points)))
    got = nsga2_select(np.array(points, dtype=float), n, violations)
    expected: list[int] = []
    for front in brute_sort(points, violations):
        if len(expected) + len(front) <= n:
            expected += front
            continue
        if len(front) <= 2:
            crowd = [float("inf")] * len(front)
        else:
            crowd = brute_crowding([points[i] for i in front])
        ranked = sorted(range(len(front)), key=lambda j: (-crowd[j], front[j]))
        expected += [front[j] for j in ranked[: n - len(expected)]]
        break
    assert got == expected
    assert len(set(got)) == n
