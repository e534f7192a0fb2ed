"""`automoe retrain RUN_DIR`: retrain subnets of a search's Pareto front from scratch as Ray
Tune trials, then add their retrained test BLEU to the run's tables.

- `automoe.training.retrain.settings`: `RetrainSettings`, what a job does;
- `automoe.training.retrain.select`: which subnets (K spread along the front's cost axis,
  or keys);
- `automoe.training.retrain.trial`: the Tune trial (chunked training, checkpoints, exact
  restore, test BLEU);
- `automoe.training.retrain.job`: checks, the trials' `TrialJob`, the Tune experiment
  (resources, ASHA, resume) and the tables (``retrained.csv``, ``bleu_retrained`` in
  ``pareto.csv``).

Names are imported on first use: importing this package imports neither Ray nor pandas
(`automoe.training.retrain.settings`, which the command line reads, imports neither).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RetrainSettings": "settings", "EXECUTION_FIELDS": "settings",
    "TrialJob": "settings", "RetrainOutcome": "job", "retrain": "job", "resume_settings": "job",
    "plan_keys": "job", "RETRAIN_DIR": "job", "EXPERIMENT": "job", "SETTINGS_FILE": "job",
    "TABLE": "job",
    "choose_keys": "select", "cost_column": "select", "spread_indices": "select",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'automoe.training.retrain' has no attribute {name!r}")
    return getattr(importlib.import_module(f"automoe.training.retrain.{_EXPORTS[name]}"), name)
