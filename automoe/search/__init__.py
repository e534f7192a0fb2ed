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

from typing import Any

from search_spaces.lazy import lazy_attribute

_EXPORTS = {
    "Evaluation": "evaluators",
    "RayEvaluator": "evaluators",
    "Score": "evaluators",
    "SerialEvaluator": "evaluators",
    "SearchOutcome": "run",
    "SearchSettings": "settings",
    "resume_settings": "settings",
    "run_search": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)
