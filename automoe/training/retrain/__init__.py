"""`automoe retrain RUN_DIR`: retrain subnets of a search's Pareto front from scratch as Ray
Tune trials, then add their retrained test BLEU to the run's tables.

- `automoe.training.retrain.select`: which subnets (K spread along the front's cost axis, or keys);
- `automoe.training.retrain.trial`: the Tune trial (chunked training, checkpoints, exact restore,
  test BLEU);
- `automoe.training.retrain.job`: settings, checks, the Tune experiment (resources, ASHA, resume)
  and the tables (``retrained.csv``, ``bleu_retrained`` in ``pareto.csv``).

Importing this package does not import Ray (the trial module and `retrain` do).
"""

from automoe.training.retrain.job import (
    EXECUTION_FIELDS,
    EXPERIMENT,
    RETRAIN_DIR,
    SETTINGS_FILE,
    TABLE,
    RetrainOutcome,
    RetrainSettings,
    TrialJob,
    plan_keys,
    resume_settings,
    retrain,
)
from automoe.training.retrain.select import choose_keys, cost_column, spread_indices

__all__ = ["RetrainSettings", "RetrainOutcome", "TrialJob", "retrain", "resume_settings", "plan_keys",
           "choose_keys", "cost_column", "spread_indices", "RETRAIN_DIR", "EXPERIMENT",
           "SETTINGS_FILE", "TABLE", "EXECUTION_FIELDS"]
