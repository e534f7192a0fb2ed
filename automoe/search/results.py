"""Result tables of a search run: ``candidates.csv`` and ``pareto.csv``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from automoe.io_utils import atomic_write_csv, read_csv, read_json
from automoe.search.objectives import parse_objectives

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig

__all__ = ["OPERATIONAL_COLUMNS", "candidate_table", "pareto_table", "write_tables",
           "baseline_table", "write_baselines", "experts_summary", "SearchRun", "read_run"]

# Columns that say how a row was computed, not what was found: they differ between runs.
OPERATIONAL_COLUMNS = ("worker", "latency_worker", "latency_cached", "latency_ort_cached",
                       "eval_seconds")

# What the ONNX Runtime latency (`latency_ort`) reports besides numbers (the torch latency's
# columns are named in `_row`).
_ORT_INFO = ("latency_ort_device", "latency_ort_protocol", "latency_ort_cached")

# Metrics listed first (in this order) when present; any others follow alphabetically.
_METRIC_ORDER = ("bleu", "chrf", "loss", "nll", "flops", "params", "weight_bytes", "latency_ms",
                 "latency_ort_ms", "predicted_latency_ms")
# A metric's uncertainty columns follow it: 95% interval bounds or a standard error.
_COMPANIONS = ("_lo", "_hi", "_se")


def _metric_columns(objectives: list[str], metrics: Mapping[str, float]) -> list[str]:
    """Objectives first, then `_METRIC_ORDER`, then the rest alphabetically; each metric
    followed by its uncertainty columns."""
    companions = {m + c for m in metrics for c in _COMPANIONS if m + c in metrics}
    plain = [m for m in metrics if m not in companions]
    ordered = [m for m in objectives if m in plain or m not in metrics]
    ordered += [m for m in _METRIC_ORDER if m in plain and m not in ordered]
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


def _row(algo: Any, entry: Any, on_front: bool, details: Mapping[str, Any]) -> dict[str, Any]:
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


def candidate_table(algo: Any, state: Any, details: Mapping[str, Any]) -> pd.DataFrame:
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


def pareto_table(algo: Any, table: pd.DataFrame) -> pd.DataFrame:
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


def write_tables(run_dir: str | Path, algo: Any, state: Any, details: Mapping[str, Any]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes RUN_DIR/candidates.csv and RUN_DIR/pareto.csv atomically."""
    run = Path(run_dir)
    table = candidate_table(algo, state, details)
    front = pareto_table(algo, table)
    for name, frame in (("candidates.csv", table), ("pareto.csv", front)):
        atomic_write_csv(frame, run / name)
    return table, front


def baseline_table(algo: Any, entries: Mapping[str, Any], details: Mapping[str, Any]
                   ) -> pd.DataFrame:
    """One row per named reference subnet (``entries``: name -> `evolution` Entry with
    origin "baseline"), with the columns of ``candidate_table`` plus ``baseline`` (the
    name) first. Baselines are never part of the search's front."""
    rows = [{"baseline": name, **_row(algo, e, False, details)} for name, e in entries.items()]
    return pd.DataFrame(rows)


def write_baselines(run_dir: str | Path, table: pd.DataFrame) -> Path:
    """Writes RUN_DIR/baselines.csv atomically."""
    return atomic_write_csv(table, Path(run_dir) / "baselines.csv")


@dataclass(frozen=True)
class SearchRun:
    """A search RUN_DIR, read: its tables (``key`` as str) and ``search.json``.

    ``front`` is None when the run has no ``pareto.csv``; ``meta`` is empty when it has no
    ``search.json`` (and `read_run` was told that is fine).
    """

    path: Path
    candidates: pd.DataFrame
    front: pd.DataFrame | None
    meta: dict[str, Any]

    @property
    def objectives(self) -> tuple[Any, ...]:
        """The search's objectives, from ``search.json``'s settings."""
        return parse_objectives(self.meta["settings"]["objectives"])


def read_run(run_dir: str | Path, *, need_front: bool = False, need_meta: bool = True
             ) -> SearchRun:
    """The one reader of a search RUN_DIR (or of a run dir with the same tables, such as
    `automoe fidelity`'s): ``candidates.csv`` (required, not empty), ``pareto.csv`` (required
    with ``need_front``; an empty file reads as an empty front) and ``search.json`` (a JSON
    object, required with ``need_meta``). Every table is read with ``key`` as text, never as
    a number. Errors name the file and what was expected."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such search run directory")
    front_path, csv = run / "pareto.csv", run / "candidates.csv"
    if need_front and not front_path.is_file():
        raise FileNotFoundError(f"{run}: no pareto.csv (is this a finished `automoe search` "
                                "RUN_DIR?)")
    meta_path = run / "search.json"
    if need_meta and not meta_path.is_file():
        raise FileNotFoundError(f"{run}: no search.json (is this an `automoe search` RUN_DIR?)")
    if not csv.is_file():
        raise FileNotFoundError(f"{run}: no candidates.csv ({run} is not a search run dir "
                                "written by `automoe search`, or no generation has finished "
                                "yet)")
    candidates = read_csv(csv)
    if candidates.empty or "key" not in candidates:
        raise ValueError(f"{csv}: no candidates")
    front = None
    if front_path.is_file():
        front = candidates.iloc[:0] if front_path.stat().st_size == 0 else read_csv(front_path)
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta_path.is_file():
        check_run_meta(meta, meta_path, complete=need_meta)
    return SearchRun(run, candidates, front, meta)


# what the readers of a run dir take from its search.json: key -> (type, required)
_META = {"settings": (dict, True), "supernet": (dict, False), "data": (str, False),
         "protocols": (dict, False)}
_SETTINGS = {"data": (str, True), "supernet": (str, False), "objectives": (list, False),
             "space": ((str, type(None)), False), "dev_sentences": (int, False),
             "beam": (int, False)}


def check_run_meta(meta: dict, path: Path, *, complete: bool = True) -> None:
    """ValueError, one line naming `path` and the key, when a field that commands read from
    ``search.json`` is of the wrong type or, with `complete` (commands that need the run's
    settings: export, retrain), missing (a hand-edited or foreign file would otherwise fail
    deep inside a command with a traceback)."""
    def check(data: dict, schema: dict, prefix: str) -> None:
        for key, (kind, required) in schema.items():
            if key not in data:
                if required and complete:
                    raise ValueError(f"{path}: missing {prefix}{key!r}")
                continue
            if not isinstance(data[key], kind) or isinstance(data[key], bool) and kind is int:
                want = kind.__name__ if isinstance(kind, type) else "a string or null"
                raise ValueError(f"{path}: {prefix}{key!r} must be {_ARTICLE.get(want, want)}, "
                                 f"got {data[key]!r}")

    check(meta, _META, "")
    if "settings" in meta:
        check(meta["settings"], _SETTINGS, "settings.")
    checkpoint = meta.get("supernet", {}).get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise ValueError(f"{path}: 'supernet.checkpoint' must be a path string, got "
                         f"{checkpoint!r}")


_ARTICLE = {"dict": "an object", "str": "a string", "list": "a list", "int": "an integer"}
