"""A run directory's files, and their one reader and writer.

A run directory (RUN_DIR) is what `automoe search` writes and `automoe fidelity` writes for
each of its training jobs; export, retrain, plot, the pipeline and the studies read it:

- ``search.json``: the settings it was started with (``settings``: data, supernet,
  objectives, ...), the supernet's and data's identity, protocols and status;
- ``candidates.csv``: one row per scored subnet (``key``, ``config``, metrics);
- ``pareto.csv``: the feasible non-dominated rows (an empty file: an empty front);
- ``baselines.csv``: the space's reference subnets, scored like candidates (optional);
- ``retrained.csv``: what `automoe retrain` adds; ``comparisons.csv``: the search's paired
  tests of its front against the baselines (optional);
- ``checkpoint.json``: a search's own state after each generation (what ``--resume`` reads).

`RunDir` names these files and is the only code that opens them; every table is read with
``key`` as text, every write is atomic (`automoe.io_utils`). `read_run` reads a run with its
checks; errors name the file and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automoe.io_utils import atomic_write_csv, atomic_write_json, read_csv, read_json
from automoe.search.objectives import Objective, parse_objectives

if TYPE_CHECKING:
    import pandas as pd  # the tables are DataFrames; importing this module needs no pandas

__all__ = ["RunDir", "SearchRun", "read_run", "check_run_meta", "META", "CANDIDATES",
           "PARETO", "BASELINES", "RETRAINED", "COMPARISONS", "CHECKPOINT"]

META = "search.json"
CANDIDATES = "candidates.csv"
PARETO = "pareto.csv"
BASELINES = "baselines.csv"
RETRAINED = "retrained.csv"
COMPARISONS = "comparisons.csv"
CHECKPOINT = "checkpoint.json"


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (nothing is read until asked)."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def meta_path(self) -> Path:
        return self.path / META

    @property
    def candidates_path(self) -> Path:
        return self.path / CANDIDATES

    @property
    def pareto_path(self) -> Path:
        return self.path / PARETO

    @property
    def baselines_path(self) -> Path:
        return self.path / BASELINES

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_meta(self) -> bool:
        """True when ``search.json`` exists (a run was started here)."""
        return self.meta_path.is_file()

    def has_candidates(self) -> bool:
        return self.candidates_path.is_file()

    def read_meta(self) -> dict[str, Any]:
        """``search.json`` as a JSON object, its typed fields checked (`check_run_meta`,
        missing fields allowed). FileNotFoundError when absent."""
        if not self.has_meta():
            raise FileNotFoundError(f"{self.meta_path}: no such file (is {self.path} a run "
                                    "directory?)")
        meta = read_json(self.meta_path)
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta_path}: expected a JSON object, got "
                             f"{type(meta).__name__}")
        check_run_meta(meta, self.meta_path, complete=False)
        return meta

    def read_settings(self) -> dict[str, Any]:
        """``search.json``'s ``settings`` object (ValueError naming the file when absent)."""
        settings = self.read_meta().get("settings")
        if not isinstance(settings, dict):
            raise ValueError(f"{self.meta_path}: missing 'settings'")
        return settings

    def status(self) -> str | None:
        """``search.json``'s ``status`` ("running", "finished"), None without one."""
        return self.read_meta().get("status") if self.has_meta() else None

    def write_meta(self, doc: Mapping[str, Any]) -> Path:
        """Writes ``search.json`` atomically; its typed fields are checked first."""
        check_run_meta(dict(doc), self.meta_path, complete=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, dict(doc))
        return self.meta_path

    def read_checkpoint(self) -> dict[str, Any]:
        """``checkpoint.json`` (a search's state after its last finished generation)."""
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"{self.checkpoint_path}: no checkpoint (was this search "
                                    "ever started?)")
        data = read_json(self.checkpoint_path)
        if not isinstance(data, dict):
            raise ValueError(f"{self.checkpoint_path}: expected a JSON object")
        return data

    def write_checkpoint(self, doc: Mapping[str, Any]) -> Path:
        """Writes ``checkpoint.json`` atomically, exactly: the state must read back as it
        was (an infeasible candidate's inf stays inf), so not strict JSON."""
        atomic_write_json(self.checkpoint_path, dict(doc), strict=False)
        return self.checkpoint_path

    def read_candidates(self) -> pd.DataFrame:
        """``candidates.csv`` (``key`` as text); FileNotFoundError / ValueError (empty)."""
        if not self.has_candidates():
            raise FileNotFoundError(f"{self.path}: no {CANDIDATES} ({self.path} is not a run "
                                    "directory written by `automoe search` or `automoe "
                                    "fidelity`, or no generation has finished yet)")
        table = read_csv(self.candidates_path)
        if table.empty or "key" not in table:
            raise ValueError(f"{self.candidates_path}: no candidates")
        return table

    def read_front(self, candidates: pd.DataFrame | None = None) -> pd.DataFrame | None:
        """``pareto.csv`` (an empty file reads as an empty front with ``candidates``'
        columns); None when absent."""
        if not self.pareto_path.is_file():
            return None
        if self.pareto_path.stat().st_size == 0:
            base = candidates if candidates is not None else self.read_candidates()
            return base.iloc[:0]
        return read_csv(self.pareto_path)

    def read_optional(self, name: str, **kwargs: Any) -> pd.DataFrame | None:
        """One of the optional tables (`BASELINES`, `RETRAINED`, `COMPARISONS`) or None."""
        path = self.path / name
        return read_csv(path, **kwargs) if path.is_file() else None

    def write_table(self, name: str, table: pd.DataFrame, **kwargs: Any) -> Path:
        """Writes one of the run's tables atomically (``kwargs``: `atomic_write_csv`'s)."""
        if name not in (CANDIDATES, PARETO, BASELINES, RETRAINED, COMPARISONS):
            raise ValueError(f"{name!r} is not a run directory table")
        self.path.mkdir(parents=True, exist_ok=True)
        return atomic_write_csv(table, self.path / name, **kwargs)

    def write_tables(self, candidates: pd.DataFrame, front: pd.DataFrame) -> None:
        """Writes ``candidates.csv`` and ``pareto.csv`` atomically."""
        self.write_table(CANDIDATES, candidates)
        self.write_table(PARETO, front)


@dataclass(frozen=True)
class SearchRun:
    """A run directory, read: its tables (``key`` as str) and ``search.json``.

    ``front`` is None when the run has no ``pareto.csv``; ``meta`` is empty when it has no
    ``search.json`` (and `read_run` was told that is fine).
    """

    path: Path
    candidates: pd.DataFrame
    front: pd.DataFrame | None
    meta: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """``search.json``'s settings ({} without them)."""
        return dict(self.meta.get("settings") or {})

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """The run's objectives, from ``search.json``'s settings."""
        return tuple(parse_objectives(self.meta["settings"]["objectives"]))


def read_run(run_dir: str | Path, *, need_front: bool = False, need_meta: bool = True,
             need_objectives: bool = False) -> SearchRun:
    """The one reader of a run directory: ``candidates.csv`` (required, not empty),
    ``pareto.csv`` (required with ``need_front``), ``search.json`` (a JSON object, required
    with ``need_meta``; with ``need_objectives`` its settings must name the objectives,
    and a missing ``pareto.csv`` reads as an empty front). Errors name the file and what
    was expected."""
    run = RunDir.at(run_dir)
    if not run.path.is_dir():
        raise FileNotFoundError(f"{run.path}: no such run directory")
    need_meta = need_meta or need_objectives
    if need_front and not run.pareto_path.is_file():
        raise FileNotFoundError(f"{run.path}: no {PARETO} (is this a finished `automoe "
                                "search` RUN_DIR?)")
    if need_meta and not run.has_meta():
        raise FileNotFoundError(f"{run.path}: no {META} (is this an `automoe search` "
                                "RUN_DIR?)")
    candidates = run.read_candidates()
    front = run.read_front(candidates)
    meta = run.read_meta() if run.has_meta() else {}
    if need_meta:
        check_run_meta(meta, run.meta_path, complete=True)
    if need_objectives:
        if "objectives" not in meta["settings"]:
            raise ValueError(f"{run.meta_path}: no 'settings' with 'objectives'")
        if front is None:
            front = candidates.iloc[:0]
    return SearchRun(run.path, candidates, front, meta)


# what the readers of a run dir take from its search.json: key -> (type, required)
_META = {"settings": (dict, True), "supernet": (dict, False), "data": (str, False),
         "protocols": (dict, False)}
_SETTINGS = {"data": (str, True), "supernet": (str, False), "objectives": (list, False),
             "space": ((str, type(None)), False), "dev_sentences": (int, False),
             "beam": (int, False)}
_ARTICLE = {"dict": "an object", "str": "a string", "list": "a list", "int": "an integer"}


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
