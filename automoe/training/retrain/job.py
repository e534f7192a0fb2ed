"""The `automoe retrain` job: checks, the trials' job, the Tune experiment and the result
tables.

`retrain(settings)` reads a search RUN_DIR, chooses the subnets
(`automoe.training.retrain.select`), checks everything (tables, keys, training options, the
Ray cluster's room for one trial), then runs one Tune trial per subnet
(`automoe.training.retrain.trial`) and writes the tables.

Layout: ``RUN_DIR/retrain/retrain.json`` (settings and chosen keys), ``RUN_DIR/retrain/tune/``
(Tune's experiment: state, per-trial results and checkpoints; Tune's ``storage_path`` is
``RUN_DIR/retrain``), ``RUN_DIR/retrain/models/<key>/`` (each trial's training run dir;
``model/`` is the exported model). Results: ``RUN_DIR/retrained.csv`` (one row per trial)
and a ``bleu_retrained`` column merged into ``RUN_DIR/pareto.csv``. ``candidates.csv`` is
left alone on purpose: `automoe.plots.load_run` merges ``retrained.csv`` into it by key, and
a ``bleu_retrained`` column already there would collide with that merge (pandas would
rename both). On a multi-node cluster RUN_DIR must be on a filesystem every node shares
(Tune persists the trial checkpoints there; the trials write their run dirs there).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from automoe.bleu import corpus_scores
from automoe.data import load_split
from automoe.io_utils import atomic_write_json, read_json
from automoe.run_dir import PARETO, RETRAINED, RunDir, read_run
from automoe.search.run import check_ray_address
from automoe.training.retrain.select import choose_keys, cost_column
from automoe.training.retrain.settings import EXECUTION_FIELDS, RetrainSettings, TrialJob
from search_spaces.checks import check_known_fields
from search_spaces.config import SubnetConfig

__all__ = ["RetrainSettings", "RetrainOutcome", "retrain", "resume_settings", "plan_keys",
           "TrialJob", "RETRAIN_DIR", "EXPERIMENT", "SETTINGS_FILE", "TABLE", "EXECUTION_FIELDS"]

RETRAIN_DIR = "retrain"  # under the search RUN_DIR
EXPERIMENT = "tune"  # Tune's experiment name (resumed attempts: tune-2, tune-3, ...)
_KEY = re.compile(r"[0-9a-f]{16}")
SETTINGS_FILE = "retrain.json"
TABLE = RETRAINED
FORMAT = "automoe.retrain/1"
_INHERITED = ("bleu", "chrf", "loss", "flops", "params", "latency_ms", "predicted_latency_ms")


@dataclass(frozen=True)
class _Plan:
    """A checked job: the search run dir, the keys in order, its candidates table, the
    early-stopping rule and what the trials need."""

    run: Path
    keys: list[str]
    candidates: pd.DataFrame
    early_stop: str
    job: TrialJob


@dataclass(frozen=True)
class RetrainOutcome:
    """Where the results are: the table (one row per trial) and its path."""

    table: pd.DataFrame
    path: Path
    keys: tuple[str, ...]


# ---- the job ------------------------------------------------------------------------------


def _read_run(run: Path, *, need_front: bool = True
              ) -> tuple[pd.DataFrame | None, pd.DataFrame, dict[str, Any]]:
    """(pareto, candidates, search.json settings) of a search RUN_DIR (or of another run dir
    with the same tables, e.g. `automoe fidelity`'s); pareto is None when absent and not
    needed (explicit --keys)."""
    table = read_run(run, need_front=need_front, need_meta=True)
    if need_front and table.front is not None and table.front.empty:
        raise ValueError(f"{run / 'pareto.csv'}: the front is empty (no feasible subnet)")
    return table.front, table.candidates, table.meta.get("settings", {})


def _plan(settings: RetrainSettings, keys: list[str] | None = None) -> _Plan:
    """Everything the trials need, checked; `keys` (a resumed job's) skip the choice.
    Nothing is written."""
    run = Path(settings.run_dir).resolve()
    pareto, candidates, search = _read_run(run, need_front=keys is None and not settings.keys)
    data = Path(search.get("data", "")).resolve()
    if not (data / "meta.json").is_file():
        raise ValueError(f"{run / 'search.json'}: data dir {str(data)!r} is not a prepared "
                         "data dir (no meta.json)")
    if keys is None and not settings.keys:
        assert pareto is not None
        keys = choose_keys(pareto, top=settings.top,
                           cost=cost_column(search.get("objectives", ())))
    keys = list(dict.fromkeys(keys if keys is not None else settings.keys))
    bad = [k for k in keys if not _KEY.fullmatch(str(k))]
    if bad:  # keys become folder names: never a path
        raise ValueError(f"subnet keys must be 16 hex digits, got {bad[:3]} (from --keys or "
                         f"{run / 'pareto.csv'})")
    unknown = [k for k in keys if k not in set(candidates["key"])]
    if unknown:
        raise ValueError(f"--keys: {unknown} not in {run / 'candidates.csv'}")
    configs = candidates.drop_duplicates("key").set_index("key")["config"]
    opts = settings.options()
    job = TrialJob(
        data_dir=str(data), models_dir=str(run / RETRAIN_DIR / "models"), options=opts,
        configs={k: SubnetConfig.from_json(configs[k], source=f"{run / 'candidates.csv'}: {k}")
                 for k in keys},
        report_every=opts.validate_every, average_last=settings.average_last,
        beam=settings.beam, lenpen=settings.lenpen, test_sentences=settings.test_sentences,
        cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial)
    return _Plan(run=run, keys=keys, candidates=candidates, early_stop=settings.early_stop,
                 job=job)


def plan_keys(settings: RetrainSettings) -> pd.DataFrame:
    """The candidates.csv rows `retrain` would train, in order (checks as `retrain` does;
    nothing is written, no Ray): ``automoe retrain --dry-run``."""
    plan = _plan(settings)
    rows = plan.candidates.drop_duplicates("key").set_index("key").loc[plan.keys]
    return rows.reset_index()


def resume_settings(run_dir: str | Path, given: Mapping[str, Any] | None = None
                    ) -> RetrainSettings:
    """The stored settings of RUN_DIR's retrain job; `given` values (None = not given) must
    equal them, except `EXECUTION_FIELDS`, which replace them. The Ray address comes from
    `given` only, never from the run directory."""
    path = Path(run_dir) / RETRAIN_DIR / SETTINGS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no retrain job to resume in {run_dir}")
    doc = read_json(path)
    stored = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: expected an object with a 'settings' object, got "
                         f"{type(stored if isinstance(doc, dict) else doc).__name__}")
    check_known_fields(RetrainSettings, stored, source=str(path), what="setting(s)")
    given = {k: v for k, v in (given or {}).items() if v is not None}
    names = {f.name for f in dataclasses.fields(RetrainSettings)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"unknown retrain setting(s) {unknown}")
    resolved = RetrainSettings(**{**stored, "run_dir": str(run_dir)}).options().to_dict()
    diffs = [f"{k}: stored {resolved.get(k)!r}, given {v!r}"
             for k, v in dict(given.pop("overrides", {})).items() if resolved.get(k) != v]
    norm = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    diffs += [f"{k}: stored {stored[k]!r}, given {v!r}" for k, v in norm.items()
              if k not in EXECUTION_FIELDS and stored.get(k) != v]
    if diffs:
        raise ValueError(f"{path}: a resumed retrain keeps its settings (only "
                         f"{', '.join(EXECUTION_FIELDS)} may change): {'; '.join(diffs)}")
    # The stored Ray address is never used: a run directory must not choose where we
    # connect (docs/protocols.md, "Trust"); only the resuming user's --ray-address does.
    stored = {k: v for k, v in stored.items() if k != "ray_address"}
    return RetrainSettings(**{**stored, **{k: v for k, v in given.items()
                                           if k in EXECUTION_FIELDS}, "run_dir": str(run_dir)})


def _init_ray(settings: RetrainSettings) -> bool:
    """Starts a local Ray (True), or joins ``ray_address`` / the one already initialised in
    this process; never a cluster found on this machine (see `automoe.search.run`)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")  # trials are the job (docs/search.md)
    if settings.ray_address:

        check_ray_address(settings.ray_address)
        ray.init(address=settings.ray_address, log_to_driver=False)
    else:
        cpus = (settings.cpus_per_trial * settings.concurrent if settings.concurrent
                else os.cpu_count() or 1)
        from automoe.ray_local import start_local_ray

        start_local_ray(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return True


def _check_cluster(settings: RetrainSettings) -> None:
    """A trial that no node can hold would wait forever: refuse up front. (A trial runs on
    one node, so the largest node counts, not the cluster's total.)"""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial}
    have = {k: max((n.get(k, 0) for n in nodes), default=0) for k in need}
    short = [f"{k}: a trial needs {v:g}, the largest node has {have[k]:g}"
             for k, v in need.items() if v and have[k] < v]
    if short:
        raise ValueError(f"--cpus-per-trial {settings.cpus_per_trial} --gpus-per-trial "
                         f"{settings.gpus_per_trial:g} does not fit the Ray cluster "
                         f"({'; '.join(short)})")


def _tuner(settings: RetrainSettings, plan: _Plan, base: Path, keys: list[str],
           experiment: str) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from automoe.training.retrain.trial import Progress, retrain_trial, trial_dirname

    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    trainable = tune.with_resources(retrain_trial, resources)
    total, every = plan.job.options.max_updates, plan.job.report_every
    scheduler = None
    if settings.early_stop == "asha":
        scheduler = ASHAScheduler(time_attr="updates", metric="dev_loss", mode="min",
                                  max_t=total, reduction_factor=settings.reduction_factor,
                                  grace_period=settings.grace_updates or max(every, total // 4))
    return tune.Tuner(
        trainable, param_space={"key": tune.grid_search(keys), "job": plan.job.to_dict()},
        tune_config=tune.TuneConfig(scheduler=scheduler,
                                    max_concurrent_trials=settings.concurrent or None,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(base), verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[Progress(total * len(keys), settings.progress)]))


def retrain(settings: RetrainSettings, *, resume: bool = False) -> RetrainOutcome:
    """Retrains the chosen subnets as Tune trials and writes the tables (module docstring).

    With `resume` (pass `resume_settings`' result), continues the job stored in RUN_DIR from
    state of our own, never from Tune's pickled experiment state (a run directory may come
    from someone else, and unpickling it could run code): a trial whose run dir holds
    ``results.json`` is finished and kept; one that ASHA stopped (``retrained.csv``) stays
    stopped; every other one is trained on in a fresh Tune experiment from its run dir's
    ``checkpoint_last.pt`` (the loop's exact resume, read with ``weights_only=True``), so
    it ends with the weights of an uninterrupted run. Bad input (a missing table, an
    unknown key, options that do not resolve, a cluster without room for one trial, a job
    already there without `resume`) raises ValueError before anything is written.
    """
    base = Path(settings.run_dir).resolve() / RETRAIN_DIR
    stored_keys = None
    if resume:
        path = base / SETTINGS_FILE
        if not path.is_file():
            raise ValueError(f"{path}: no retrain job to resume")
        stored_keys = _stored_keys(path)
    elif base.exists() and any(base.iterdir()):
        raise ValueError(f"{base}: already holds a retrain job; pass --resume to continue it "
                         "(or remove the folder to start over)")
    plan = _plan(settings, stored_keys)
    kept = _kept_results(plan, base) if resume else {}
    todo = [k for k in plan.keys if k not in kept]
    results = list(kept.values())
    if todo:
        ray_started = _init_ray(settings)
        try:
            _check_cluster(settings)
            base.mkdir(parents=True, exist_ok=True)
            atomic_write_json(base / SETTINGS_FILE, {"format": FORMAT,
                                                     "settings": settings.to_dict(),
                                                     "keys": plan.keys})
            # Tune's console tables and snapshot warnings would drown the progress bar
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
            os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
                                  "0")
            job = dataclasses.replace(plan.job, continue_run_dirs=resume)
            grid = _tuner(settings, dataclasses.replace(plan, job=job), base, todo,
                          _experiment_name(base)).fit()
            results += [(r.config["key"], status, r.metrics or {}, r.error)
                        for r, status in zip(grid, _trial_statuses(grid), strict=True)]
        finally:
            if ray_started:
                import ray

                ray.shutdown()
    table = _with_intervals(_table(plan, results), plan.job.data_dir)
    run = RunDir.at(plan.run)
    path = run.write_table(RETRAINED, table, float_format=None)
    if run.pareto_path.is_file():
        _merge_front(run, table)
    return RetrainOutcome(table, path, tuple(plan.keys))


def _stored_keys(path: Path) -> list[str]:
    """The keys of a stored job, each checked to be a candidate key (16 hex digits): they
    become folder names."""
    keys = read_json(path).get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) and _KEY.fullmatch(k)
                                             for k in keys):
        raise ValueError(f"{path}: 'keys' must be a list of 16-hex-digit subnet keys")
    return keys


def _experiment_name(base: Path) -> str:
    """``tune`` for the first attempt, ``tune-2``, ``tune-3``... for resumed ones (each a
    fresh experiment: Tune's state of an earlier attempt is never read back)."""
    n = 1
    while (base / (EXPERIMENT if n == 1 else f"{EXPERIMENT}-{n}")).exists():
        n += 1
    return EXPERIMENT if n == 1 else f"{EXPERIMENT}-{n}"


def _kept_results(plan: _Plan, base: Path) -> dict[str, tuple[str, str, dict, Any]]:
    """Trials a resume keeps: finished ones (their run dir's ``results.json``, JSON written
    by the trial) and those ASHA stopped (``retrained.csv``)."""
    out: dict[str, tuple[str, str, dict, Any]] = {}
    table = RunDir.at(plan.run).read_optional(RETRAINED)
    stopped = set()
    if table is not None:
        stopped = set(table.loc[table["status"] == "stopped early", "key"])
        rows = table.set_index("key")
    for key in plan.keys:
        results = Path(plan.job.models_dir) / key / "results.json"
        if results.is_file() and (results.parent / "model").is_dir():
            summary = read_json(results)
            test = summary["test"]
            out[key] = (key, "TERMINATED", {
                "updates": summary["updates"], "best_dev_loss": summary["best_dev_loss"],
                "bleu_retrained": test["bleu"], "chrf_retrained": test["chrf"],
                "test_sentences": test["sentences"],
                "bleu_signature": test["signatures"]["bleu"], "weights": summary["weights"],
                "model_dir": summary["model_dir"],
                "device": "cuda" if plan.job.gpus > 0 else
                f"cpu ({plan.job.cpus} torch threads)"}, None)
        elif key in stopped:
            row = rows.loc[key]
            out[key] = (key, "TERMINATED", {"updates": int(row["updates"]),
                                            "best_dev_loss": float(row["best_dev_loss"])}, None)
    return out


def _trial_statuses(grid: Any) -> list[str]:
    """Tune's status of each result's trial (TERMINATED, ERROR, RUNNING, ...).

    ResultGrid keeps the live Trial objects in its analysis (its own ``num_errors`` reads
    them); the experiment state on disk is no substitute: with ray 2.60 it still said
    RUNNING for a trial whose worker had been killed. Without them: "" (unknown)."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    by_key = {t.config.get("key"): t.status for t in trials}  # one trial per key
    return [by_key.get(r.config["key"], "") for r in grid]


def _status(tune_status: str, metrics: Mapping[str, Any], error: Any, *, asha: bool) -> str:
    """finished / stopped early (by ASHA) / error / interrupted (resume continues it).

    Tune also ends the trials of an interrupted experiment (Ctrl-C, SIGTERM) as TERMINATED,
    so without ASHA a trial that ended without its test scores was interrupted, not
    stopped: calling it stopped would make a resume keep it unfinished forever."""
    if error is not None or tune_status == "ERROR":
        return "error"
    if "bleu_retrained" in metrics:
        return "finished"
    return "stopped early" if asha and tune_status in ("TERMINATED", "") else "interrupted"


def _table(plan: _Plan, results: list[tuple[str, str, dict, Any]]) -> pd.DataFrame:
    """One row per chosen key: retrained scores, training progress, the search's
    (inherited-weight) metrics of that key, where the model is, and the test protocol."""
    total = plan.job.options.max_updates
    inherited = plan.candidates.drop_duplicates("key").set_index("key")
    by_key = {key: (status, metrics, error) for key, status, metrics, error in results}
    nan = float("nan")
    rows = []
    for key in plan.keys:
        status, metrics, error = by_key.get(key, ("", {}, None))
        rows.append({
            "key": key,
            "status": _status(status, metrics, error, asha=plan.early_stop == "asha"),
            "bleu_retrained": metrics.get("bleu_retrained", nan),
            "chrf_retrained": metrics.get("chrf_retrained", nan),
            "best_dev_loss": metrics.get("best_dev_loss", nan),
            "updates": int(metrics.get("updates", 0)), "max_updates": total,
            **{c: inherited.at[key, c] for c in _INHERITED if c in inherited},
            "experts": inherited.at[key, "experts"] if "experts" in inherited else "",
            "test_sentences": metrics.get("test_sentences", 0),
            "beam": plan.job.beam, "lenpen": plan.job.lenpen,
            "device": metrics.get("device", ""), "weights": metrics.get("weights", ""),
            "bleu_signature": metrics.get("bleu_signature", ""),
            "model_dir": metrics.get("model_dir", ""),
            "error": "" if error is None else str(error).strip().splitlines()[-1][:300],
        })
    return pd.DataFrame(rows)


def _with_intervals(table: pd.DataFrame, data_dir: str) -> pd.DataFrame:
    """Adds ``bleu_retrained_lo/_hi`` and ``chrf_retrained_lo/_hi``: sacreBLEU's 95%
    bootstrap interval of each finished trial's test hypotheses (``test.hyp.txt`` beside its
    model) against the same references (`automoe.bleu.corpus_scores`)."""

    refs = None
    cols: dict[str, list[float]] = {c: [] for c in (
        "bleu_retrained_lo", "bleu_retrained_hi", "chrf_retrained_lo", "chrf_retrained_hi")}
    for _, row in table.iterrows():
        hyp = Path(str(row["model_dir"])).parent / "test.hyp.txt" if row["model_dir"] else None
        scores: dict[str, float] = {}
        if row["status"] == "finished" and hyp is not None and hyp.is_file():
            refs = refs if refs is not None else load_split(data_dir, "test").references()
            hyps = hyp.read_text(encoding="utf-8").splitlines()
            scores = corpus_scores(hyps, refs[:len(hyps)], n_bootstrap=1000)
        for name in ("bleu", "chrf"):
            for side in ("lo", "hi"):
                cols[f"{name}_retrained_{side}"].append(scores.get(f"{name}_{side}",
                                                                   float("nan")))
    out = table.copy()
    for pos, (name, values) in enumerate(cols.items()):
        anchor = "bleu_retrained" if name.startswith("bleu") else "chrf_retrained"
        out.insert(out.columns.get_loc(anchor) + 1 + pos % 2, name, values)
    return out


def _merge_front(run: RunDir, table: pd.DataFrame) -> None:
    """Adds (or replaces) pareto.csv's ``bleu_retrained`` column (NaN where not retrained);
    every other cell is written back as the search wrote it (same float format)."""
    front = run.read_front()
    assert front is not None  # (the caller checked)
    scores = table.set_index("key")["bleu_retrained"]
    front["bleu_retrained"] = front["key"].map(scores).astype(float)
    run.write_table(PARETO, front)
