"""Result tables of a search run: ``candidates.csv`` and ``pareto.csv`` (written through
`automoe.run_dir.RunDir`).

Both are derived from the search state (the archive of evaluated configs and their
metrics) plus the per-candidate *details* the evaluator reported (worker, latency device,
seconds), so they can be rebuilt at any time, in particular after a resume.

``candidates.csv`` has one row per distinct evaluated subnet (evaluation order): its key,
first generation and origin, the config as JSON, architecture summary columns, every metric
(``bleu``, ``loss``, ``flops``, ``params``, ``latency_ms`` and its statistics, ...),
feasibility, whether it is on the final front, and who scored it. ``pareto.csv`` holds the
feasible non-dominated rows, best first by the first objective, without the operational
columns (worker, seconds), so two runs with the same seed give the same file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from automoe.metrics import table_order
from automoe.run_dir import BASELINES, RunDir

if TYPE_CHECKING:
    from evolution import Entry, SearchAlgorithm, SearchState
    from search_spaces.config import SubnetConfig

__all__ = ["OPERATIONAL_COLUMNS", "candidate_table", "pareto_table", "write_tables",
           "baseline_table", "write_baselines", "experts_summary"]

# Columns that say how a row was computed, not what was found: they differ between runs.
OPERATIONAL_COLUMNS = ("worker", "latency_worker", "latency_cached", "latency_ort_cached",
                       "eval_seconds")

# What the ONNX Runtime latency (`latency_ort`) reports besides numbers (the torch latency's
# columns are named in `_row`).
_ORT_INFO = ("latency_ort_device", "latency_ort_protocol", "latency_ort_cached")

# A metric's uncertainty columns follow it: 95% interval bounds or a standard error.
_COMPANIONS = ("_lo", "_hi", "_se")


def _metric_columns(objectives: list[str], metrics: Mapping[str, float]) -> list[str]:
    """Objectives first, then the registry's order (`automoe.metrics`), then the rest
    alphabetically; each metric followed by its uncertainty columns."""
    companions = {m + c for m in metrics for c in _COMPANIONS if m + c in metrics}
    plain = [m for m in metrics if m not in companions]
    ordered = [m for m in objectives if m in plain or m not in metrics]
    ordered += [m for m in table_order() if m in plain and m not in ordered]
    ordered += sorted(m for m in plain if m not in ordered)
    return [c for m in ordered for c in (m, *(m + s for s in _COMPANIONS if m + s in metrics))]


def experts_summary(config: SubnetConfig) -> str:
    """``"enc 1,4,2 / dec 1,1"``: experts per layer (1 = a dense FFN)."""
    enc = ",".join(str(n) for n in config.encoder_experts)
    dec = ",".join(str(n) for n in config.decoder_experts)
    return f"enc {enc} / dec {dec}"


def _topk_summary(config: SubnetConfig) -> str:
    enc = ",".join(str(k) for k in config.encoder_top_k)
    dec = ",".join(str(k) for k in config.decoder_top_k)
    return f"enc {enc} / dec {dec}"


def _row(algo: SearchAlgorithm, entry: Entry, on_front: bool, details: Mapping[str, Any]) -> dict[str, Any]:
    config = entry.genome
    metrics = dict(entry.metrics)
    objectives = [o.name for o in algo.objectives]
    ordered = _metric_columns(objectives, metrics)
    violation = sum(c.violation(metrics[c.name]) for c in algo.constraints)
    detail = details.get(entry.key, {})
    info = dict(detail.get("info", {}))
    row: dict[str, Any] = {
        "key": entry.key,
        "generation": entry.generation,
        "origin": entry.origin,
        **{m: metrics.get(m, float("nan")) for m in ordered},
        "feasible": violation == 0,
        "violation": violation,
        "on_front": on_front,
        "is_dense": bool(config.is_dense),
        "experts": experts_summary(config),
        "top_k": _topk_summary(config),
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_embed_dim": config.encoder_embed_dim,
        "decoder_embed_dim": config.decoder_embed_dim,
        "latency_device": info.pop("latency_device", ""),
        "latency_protocol": info.pop("latency_protocol", ""),
        "worker": detail.get("worker", ""),
        "latency_worker": info.pop("latency_worker", ""),
        "latency_cached": info.pop("latency_cached", ""),  # reused from the latency cache
        **{col: info.pop(col, "") for col in _ORT_INFO},
        "eval_seconds": detail.get("seconds", float("nan")),
        "config": json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":")),
    }
    return row


def candidate_table(algo: SearchAlgorithm, state: SearchState, details: Mapping[str, Any]) -> pd.DataFrame:
    """One row per distinct evaluated config, in evaluation order.

    Args:
        algo: the `evolution.SearchAlgorithm` (objectives, constraints, front).
        state: its `evolution.SearchState`.
        details: ``{key: {"worker": str, "seconds": float, "info": {str: str}}}``.
    """
    front = set(algo.front_keys(state))
    rows = [_row(algo, e, e.key in front, details) for e in state.archive.values()]
    table = pd.DataFrame(rows)
    if not rows:
        return table
    # Latency columns stay empty when latency was not measured: drop them.
    for col in ("latency_device", "latency_protocol", "latency_worker", "latency_cached",
                *_ORT_INFO):
        if (table[col] == "").all():
            table = table.drop(columns=col)
    return table


def pareto_table(algo: SearchAlgorithm, table: pd.DataFrame) -> pd.DataFrame:
    """The feasible front rows of ``candidate_table``, best first by the first objective
    (ties by key), without `OPERATIONAL_COLUMNS`."""
    if table.empty:
        return table
    first = algo.objectives[0]
    front = table[table["on_front"]].drop(
        columns=[c for c in OPERATIONAL_COLUMNS if c in table])
    front = front.sort_values([first.name, "key"], ascending=[not first.maximize, True],
                              kind="mergesort")
    return front.reset_index(drop=True)


def write_tables(run_dir: str | Path, algo: SearchAlgorithm, state: SearchState, details: Mapping[str, Any]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes RUN_DIR/candidates.csv and RUN_DIR/pareto.csv atomically."""
    table = candidate_table(algo, state, details)
    front = pareto_table(algo, table)
    RunDir.at(run_dir).write_tables(table, front)
    return table, front


def baseline_table(algo: SearchAlgorithm, entries: Mapping[str, Entry], details: Mapping[str, Any]
                   ) -> pd.DataFrame:
    """One row per named reference subnet (``entries``: name -> `evolution` Entry with
    origin "baseline"), with the columns of ``candidate_table`` plus ``baseline`` (the
    name) first. Baselines are never part of the search's front."""
    rows = [{"baseline": name, **_row(algo, e, False, details)} for name, e in entries.items()]
    return pd.DataFrame(rows)


def write_baselines(run_dir: str | Path, table: pd.DataFrame) -> Path:
    """Writes RUN_DIR/baselines.csv atomically."""
    return RunDir.at(run_dir).write_table(BASELINES, table)
