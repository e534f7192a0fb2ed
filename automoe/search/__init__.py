"""`automoe search`: evolutionary search over a trained supernet, scored on Ray actors.

- `objectives`: metric names, directions, units; parsing of ``--objectives``/``--constraint``.
- `evaluators`: the seam; `SerialEvaluator` and `RayEvaluator` (long-lived actors holding
  the supernet once, exclusive latency phase, dead actors replaced and work re-queued).
- `scoring`: reading the supernet checkpoint, cheap costs, `CandidateScorer`.
- `run`: `SearchSettings`, `run_search` (checkpoints, resume), `resume_settings`.
- `results`: ``candidates.csv`` and ``pareto.csv``.

See docs/search.md.
"""

from automoe.search.evaluators import Evaluation, RayEvaluator, Score, SerialEvaluator
from automoe.search.run import SearchOutcome, SearchSettings, resume_settings, run_search

__all__ = [
    "Evaluation",
    "RayEvaluator",
    "Score",
    "SearchOutcome",
    "SearchSettings",
    "SerialEvaluator",
    "resume_settings",
    "run_search",
]
