"""Benchmarks of the search engine (`evolution`) against another implementation, on
problems whose fronts are known: pymoo's NSGA-II on ZDT/DTLZ (`known_fronts`) and on
NAS-Bench-Graph's tabulated architectures (`nasbench_graph`).

Needs the ``bench`` extra (``pip install 'automoe[bench]'``: pymoo, moocore,
nas-bench-graph); nothing else in the tool imports this package. `runs` drives both
engines for an equal number of distinct evaluations, `hypervolume` scores them exactly,
`report` turns the per-seed numbers into medians, intervals and rank tests. The
commands are ``scripts/bench_pymoo.py`` and ``scripts/bench_nasbench_graph.py``;
protocols and numbers in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib

__all__ = ["require"]


def require(module: str) -> object:
    """``import module``, or a ValueError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"the benchmark needs {module.split('.')[0]!r}: pip install 'automoe[bench]'"
        ) from None
