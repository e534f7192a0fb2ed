"""The engine's non-dominated sorting, crowding distance and hypervolume against pymoo and
moocore, on random populations with ties (integer-valued objectives, duplicate points).

Skipped where pymoo is not installed (it is in the ``dev`` and ``bench`` extras).

Crowding distance follows Deb et al. 2002 in `evolution.pareto`; pymoo's NSGA-II ("cd")
differs in two ways, both pinned here:

- pymoo divides the sum over objectives by the number of objectives M. A common factor:
  the same order, so the same selections; ours equals pymoo's times M.
- On a front where an objective takes one value only, pymoo gives that objective's
  extreme points no infinite distance (its range is 0, and pymoo zeroes the whole
  column); Deb's rule gives the first and last point of every objective's sort an
  infinite distance, always, and ours does (the range-0 objective adds nothing else).
"""

from __future__ import annotations

import numpy as np
import pytest

from evolution.pareto import crowding_distance, hypervolume, non_dominated_sort

pytest.importorskip("pymoo")
from pymoo.operators.survival.rank_and_crowding.metrics import (  # noqa: E402
    get_crowding_function,
)
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting  # noqa: E402


def _populations(seed: int = 0, count: int = 300):
    """Random [N, M] integer-valued populations: few distinct values per objective and
    copied rows, so ties and duplicates are everywhere."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, m = int(rng.integers(1, 60)), int(rng.integers(2, 5))
        pts = rng.integers(0, int(rng.integers(2, 8)), size=(n, m)).astype(float)
        copies = rng.integers(0, n, size=int(rng.integers(0, n + 1)))
        yield rng.permutation(np.vstack([pts, pts[copies]]))


def _ranks(fronts: list[list[int]], n: int) -> np.ndarray:
    rank = np.full(n, -1)
    for r, front in enumerate(fronts):
        rank[front] = r
    return rank


def test_non_dominated_sort_ranks_equal_pymoos_with_ties_and_duplicates():
    duplicated = 0
    for pts in _populations():
        ours = _ranks(non_dominated_sort(pts), len(pts))
        _, theirs = NonDominatedSorting().do(pts, return_rank=True)
        np.testing.assert_array_equal(ours, theirs)
        duplicated += len(np.unique(pts, axis=0)) < len(pts)
    assert duplicated > 250  # the ties were there


def _fronts(pts: np.ndarray):
    for front in non_dominated_sort(pts):
        yield pts[front]


def test_crowding_distance_equals_pymoos_times_the_objectives_on_every_front():
    pymoo_cd = get_crowding_function("cd")  # what pymoo's NSGA2 survival uses
    compared = with_duplicates = 0
    for pts in _populations(seed=1):
        for front in _fronts(pts):
            n, m = front.shape
            constant = np.ptp(front, axis=0) == 0
            if n <= 2 or constant.any():
                continue  # n <= 2: all infinite in both; constant: the next test
            ours, theirs = crowding_distance(front), pymoo_cd.do(front) * m
            np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
            finite = np.isfinite(ours)
            np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-12, atol=0)
            compared += 1
            with_duplicates += len(np.unique(front, axis=0)) < n
    assert compared > 100 and with_duplicates > 20


def test_crowding_distance_on_a_front_with_a_constant_objective_follows_deb():
    pymoo_cd = get_crowding_function("cd")
    compared = 0
    for pts in _populations(seed=2):
        for front in _fronts(pts):
            n, m = front.shape
            if n <= 2 or not (np.ptp(front, axis=0) == 0).any():
                continue
            # a constant column sorts stably into front order: its extremes are the
            # front's first and last point, infinite under Deb's rule, not under pymoo's
            expected = pymoo_cd.do(front) * m
            expected[[0, -1]] = np.inf
            ours = crowding_distance(front)
            np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
            finite = np.isfinite(ours)
            np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-12, atol=0)
            compared += 1
    assert compared > 20
    same = np.array([[1.0, 2.0]] * 3)  # three copies of one point
    assert crowding_distance(same).tolist() == [np.inf, 0.0, np.inf]
    assert pymoo_cd.do(same).tolist() == [0.0, 0.0, 0.0]


def test_hypervolume_equals_moocores_with_ties_and_duplicates():
    moocore = pytest.importorskip("moocore")
    for pts in _populations(seed=3, count=150):
        ref = pts.max(axis=0) + 1 - (np.arange(pts.shape[1]) % 2)  # some points on its edge
        ours = hypervolume(pts, ref)
        assert ours == pytest.approx(float(moocore.hypervolume(pts, ref=ref)), rel=1e-12,
                                     abs=1e-12)
