"""`automoe search`: evolutionary search over a trained supernet, scored on Ray actors.

- `objectives`: metric names, directions, units; parsing of ``--objectives``/``--constraint``.
- `settings`: `SearchSettings` (torch- and pandas-free), `resume_settings`.
- `evaluators`: the seam; `SerialEvaluator` and `RayEvaluator` (long-lived actors holding
  the supernet once, exclusive latency phase, dead actors replaced and work re-queued).
- `scoring`: reading the supernet checkpoint, cheap costs, `CandidateScorer`.
- `run`: `run_search` (checkpoints, resume).
- `results`: ``candidates.csv`` and ``pareto.csv``.

The names below are imported on first use, so importing a light submodule (`objectives`,
`settings`) does not load the run and its tables (pandas). See docs/search.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Evaluation": "automoe.search.evaluators",
    "RayEvaluator": "automoe.search.evaluators",
    "Score": "automoe.search.evaluators",
    "SerialEvaluator": "automoe.search.evaluators",
    "SearchOutcome": "automoe.search.run",
    "SearchSettings": "automoe.search.settings",
    "resume_settings": "automoe.search.settings",
    "run_search": "automoe.search.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'automoe.search' has no attribute {name!r}")
