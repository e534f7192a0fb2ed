"""`run_search(SearchSettings)`: one search run, from settings to a finished RUN_DIR.

Order of work (cheap checks first, so bad input fails before anything expensive):

1. parse objectives / constraints / algorithm (unknown names fail here);
2. check that ``--ray-address`` answers (before anything is loaded);
3. read the supernet checkpoint, load its weights into the supernet of its space (a
   checkpoint that does not fit fails here) and check the data dir against it;
4. check every constraint on a cheap metric (FLOPs, params, predicted latency) against
   the space's most favourable subnet;
5. start (or join) Ray and the actor pool; with a latency constraint, measure the
   smallest subnet first;
6. generations: ask -> score the new configs -> tell -> checkpoint (atomic) -> tables.

After the last generation the space's reference subnets are scored (``baselines.csv``) and
every front subnet is compared with each of them by paired tests (``comparisons.csv``).

RUN_DIR holds ``checkpoint.json`` (the algorithm's state: population, archive = cache, RNG,
generation; plus per-candidate details), ``candidates.csv``, ``pareto.csv`` and
``search.json`` (settings, seeds, versions, supernet/space/data identity, protocols,
per-generation history, status). ``resume=True`` continues from the checkpoint and ends
exactly where an uninterrupted run ends (scores are deterministic; latency is measured).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automoe import checkpoints
from automoe.dev_scoring import ScoringSettings
from automoe.run_dir import COMPARISONS, RunDir
from automoe.search import scoring
from automoe.search.compare import write_comparisons
from automoe.search.evaluators import Evaluation, RayEvaluator, SerialEvaluator
from automoe.search.objectives import (
    METRICS,
    get_metric,
    latency_metric,
    needed_metrics,
    parse_constraint,
    parse_objectives,
)
from automoe.search.results import baseline_table, write_baselines, write_tables
from automoe.search.settings import (
    SearchSettings,
    build_algorithm,
    check_resume,
    resume_settings,
)
from evolution import Entry
from evolution import run_search as evolve

if TYPE_CHECKING:
    from automoe.checkpoints import SupernetCheckpoint
    from automoe.dev_scoring import ScoringSettings
    from automoe.search.scoring import CheapCosts
    from evolution import Constraint, Objective, SearchAlgorithm, SearchState

__all__ = ["SearchSettings", "SearchOutcome", "run_search", "resume_settings", "build_algorithm",
           "CHECKPOINT_FORMAT", "load_checkpoint"]

CHECKPOINT_FORMAT = "automoe.search.checkpoint/1"


@dataclass(frozen=True)
class SearchOutcome:
    """Where the run's files are and what it found."""

    run_dir: Path
    generations: int
    evaluations: int
    front_size: int
    hypervolume: float | None
    seconds: float


def check_ray_address(address: str, *, timeout: float = 3.0) -> None:
    """Raises ValueError when a "host:port" Ray address does not accept connections."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT (or 'auto')")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ValueError(f"--ray-address {address!r}: cannot reach a Ray cluster there "
                         f"({err}); start one with `ray start --head` or drop --ray-address"
                         ) from None


def _versions() -> dict[str, str]:
    import numpy
    import pandas

    out = {"python": platform.python_version(), "numpy": numpy.__version__,
           "pandas": pandas.__version__}
    for mod in ("torch", "ray"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "absent"
    try:
        from importlib.metadata import version

        out["automoe"] = version("automoe")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        out["automoe"] = "unknown"
    return out


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/checkpoint.json as written after the last finished generation."""
    files = RunDir.at(run_dir)
    data = files.read_checkpoint()
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{files.checkpoint_path}: format {data.get('format')!r}, expected "
                         f"{CHECKPOINT_FORMAT!r}")
    return data


def run_search(settings: SearchSettings, *,
               on_generation: Callable[[Any, Any], None] | None = None,
               on_result: Callable[[Any, str, int, Evaluation], None] | None = None
               ) -> SearchOutcome:
    """Runs (or resumes) a search; see the module docstring. Returns a summary.

    Args:
        settings: what to search and where to write it.
        on_generation: ``f(report, state)`` after each generation's checkpoint.
        on_result: ``f(evaluator, phase, index, evaluation)`` as each candidate's scoring
            phase finishes (monitoring; tests use it to kill a worker mid-generation).
    """

    began = time.perf_counter()
    run = Path(settings.out)
    files = RunDir.at(run)
    if not settings.resume:  # a run dir must not depend on the directory it was started from
        settings = dataclasses.replace(settings, supernet=str(Path(settings.supernet).resolve()),
                                       data=str(Path(settings.data).resolve()))
        if settings.space is not None and Path(settings.space).is_file():
            settings = dataclasses.replace(settings, space=str(Path(settings.space).resolve()))
    if settings.resume:
        check_resume(settings)
    elif files.checkpoint_path.exists():
        raise ValueError(f"{run}: already holds a search (checkpoint.json); pass --resume to "
                         "continue it or choose another --out")
    elif run.is_dir() and any(run.iterdir()) and not files.has_meta():
        raise ValueError(f"{run}: exists, is not empty and is not a search run; choose "
                         "another --out")
    objectives = parse_objectives(settings.objectives)
    constraints = tuple(parse_constraint(c) for c in settings.constraints)
    metrics = needed_metrics(objectives, constraints)
    kinds = {m.kind for m in metrics}
    if "predicted_latency" in {m.name for m in metrics} and not settings.predictor:
        raise ValueError("objective/constraint 'predicted_latency' needs --predictor DIR")
    if "latency_ort" in {m.name for m in metrics} and settings.device != "cpu":
        raise ValueError(f"objective/constraint 'latency_ort' is measured in ONNX Runtime on "
                         f"CPU; --device {settings.device} is not supported with it")

    # 2: the cluster answers before we load anything.
    if settings.workers and settings.ray_address:
        check_ray_address(settings.ray_address)
    # 3: the checkpoint (weights checked against its space) and the data it is scored on.
    checkpoint = checkpoints.read_supernet(settings.supernet)
    if settings.space is not None:
        checkpoint = checkpoints.with_space(checkpoint, settings.space)
    scoring.check_data(settings.data, checkpoint.vocab_size,
                       dev_sentences=settings.dev_sentences,
                       bleu=any(m.name == "bleu" for m in metrics))
    # 4: bounds on cheap metrics against the most favourable subnet.
    costs = scoring.CheapCosts(checkpoint, predictor=settings.predictor,
                               task=scoring.task_server(checkpoint, settings.data, settings.task))
    costs.check_constraints(constraints)
    data_identity = scoring.data_identity(settings.data)
    if settings.resume and files.has_meta():
        _check_identity(run, checkpoint, costs.space_identity(), data_identity)
    runtimes = tuple(m.runtime for m in metrics if m.kind == "latency" and m.runtime)
    scoring_settings = _scoring_settings(settings, bleu=any(m.name == "bleu" for m in metrics),
                                         runtimes=runtimes)
    latency = "latency" in kinds
    cache = settings.latency_cache_path(checkpoint.file) if latency else None
    factory = scoring.CandidateScorerFactory.of(checkpoint, settings.data, scoring_settings,
                                                latency_cache=cache)
    shared = checkpoint.state
    checkpoint_identity = checkpoint.identity()
    ray_started = False
    evaluator: SerialEvaluator | RayEvaluator | None = None
    try:
        gpus = 1 if settings.device == "cuda" else 0
        if settings.workers == 0:
            _check_local_cuda(settings)
            evaluator = SerialEvaluator(factory, shared, threads=settings.threads_per_worker,
                                        latency=latency)
        else:
            ray_started = _init_ray(settings)
            _check_cluster(settings)
            evaluator = RayEvaluator(factory, shared, workers=settings.workers,
                                     threads_per_worker=settings.threads_per_worker,
                                     gpus_per_worker=gpus, latency=latency)
        del shared, checkpoint  # the object store (or the serial scorer) holds the weights now
        if any(get_metric(c.name).kind == "latency" for c in constraints):
            _check_latency_constraint(evaluator, costs, constraints)
        identity = {"supernet": checkpoint_identity, "space": costs.space_identity(),
                    "data_identity": data_identity,
                    "protocols": costs.protocols({
                        latency_metric(rt).name: scoring_settings.latency_protocol(
                            costs.vocab_size, factory.weights, rt).describe()
                        for rt in runtimes}),
                    "latency_cache": None if cache is None else str(cache)}
        return _generations(settings, run, objectives=objectives, constraints=constraints,
                            costs=costs, evaluator=evaluator, identity=identity, began=began,
                            on_generation=on_generation, on_result=on_result)
    finally:
        if evaluator is not None:
            evaluator.close()
        if ray_started:
            import ray

            ray.shutdown()


def _scoring_settings(settings: SearchSettings, *, bleu: bool,
                      runtimes: tuple[str, ...] = ("torch",)) -> ScoringSettings:

    return ScoringSettings(
        dev_sentences=settings.dev_sentences, task=settings.task, bleu=bleu, beam=settings.beam,
        threads=settings.threads_per_worker, device=settings.device,
        latency_runs=settings.latency_runs, latency_warmup=settings.latency_warmup,
        latency_runtimes=runtimes or ("torch",))


def _check_identity(run: Path, checkpoint: SupernetCheckpoint, space: dict[str, Any],
                    data: dict[str, Any]) -> None:
    """A resumed search must score with the supernet, space and data it started with:
    ValueError naming what changed (a run recorded before data identities were stored is
    checked on supernet and space only)."""
    stored = RunDir.at(run).read_meta()
    changed = []
    was = stored.get("supernet", {}).get("sha256")
    if was != checkpoint.sha256:
        changed.append(f"supernet checkpoint {checkpoint.file} (sha256 {str(was)[:12]}... "
                       f"recorded, {checkpoint.sha256[:12]}... now: trained further or "
                       "replaced)")
    was_space = stored.get("space", {}).get("sha256")
    if was_space != space["sha256"]:
        changed.append(f"search space (hash {was_space} recorded, {space['sha256']} now)")
    was_data = stored.get("data_identity")
    if was_data is not None and was_data != data:
        diff = sorted(k for k in data if was_data.get(k) != data[k])
        changed.append(f"data dir {data['path']} ({', '.join(diff)} differ)")
    if changed:
        raise ValueError(f"--resume {run}: refusing to mix scores of two setups; changed since "
                         f"the run started: {'; '.join(changed)}. Start a new search (--out)")


def _init_ray(settings: SearchSettings) -> bool:
    """Starts a local Ray (True) or joins ``ray_address``; a Ray already initialised in
    this process is used as it is (False). Without an address the new Ray is always local
    (``address="local"``): a plain ``ray.init()`` would join a cluster that ``ray start``
    left on this machine (or that RAY_ADDRESS names) instead."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no ~/.ray token for a local run
    # Ray nices its workers to 15 by default: on a machine with other load that made scoring
    # 3-5x slower than serial, and latency would be measured at a priority no deployed
    # model runs at. Our actors are the job, not background work.
    os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, log_to_driver=False)
        else:
            from automoe.ray_local import start_local_ray

            start_local_ray(num_cpus=settings.workers * settings.threads_per_worker,
                            include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:
        raise ValueError(f"--ray-address {settings.ray_address!r}: {err}") from None
    return True


def _check_local_cuda(settings: SearchSettings) -> None:
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here")


def _check_cluster(settings: SearchSettings) -> None:
    """Actors that cannot be placed would wait forever: refuse up front."""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": settings.workers * settings.threads_per_worker}
    if settings.device == "cuda":
        need["GPU"] = settings.workers
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if have.get(k, 0) < v}
    if short:
        detail = ", ".join(f"{k}: need {v:g}, cluster has {h:g}" for k, (v, h) in short.items())
        raise ValueError(f"--workers {settings.workers} x {settings.threads_per_worker} CPU"
                         f"{' + 1 GPU' if settings.device == 'cuda' else ''} does not fit the "
                         f"Ray cluster ({detail})")


def _check_latency_constraint(evaluator: SerialEvaluator | RayEvaluator, costs: CheapCosts,
                              constraints: tuple[Constraint, ...]) -> None:
    smallest = costs.space.smallest()
    result = evaluator.evaluate([smallest])[0]
    for c in constraints:
        metric = get_metric(c.name)
        if metric.kind == "latency" and not c.satisfied(result.metrics[c.name]):
            raise ValueError(
                f"constraint {c.name}{c.op}{c.bound:g} cannot be met: the smallest subnet of "
                f"space {costs.space.name!r} measures {result.metrics[c.name]:.3g} ms "
                f"({result.info.get(f'{metric.name}_device', 'this device')})"
            )


def _generations(settings: SearchSettings, run: Path, *, objectives: tuple[Objective, ...],
                 constraints: tuple[Constraint, ...], costs: CheapCosts,
                 evaluator: SerialEvaluator | RayEvaluator, identity: dict[str, Any],
                 began: float, on_generation: Callable[[Any, Any], None] | None,
                 on_result: Callable[[Any, str, int, Evaluation], None] | None
                 ) -> SearchOutcome:
    """The generations, driven by the evolution package's loop (`evolution.run_search`)
    through its hooks: the evaluator scores a generation's new configs (with a progress bar),
    the checkpoint hook writes checkpoint.json, the tables and search.json, the generation
    hook advances the search's progress bar."""
    from tqdm.auto import tqdm


    algo = build_algorithm(settings, costs.space, objectives, constraints, costs.pre_filter)
    details: dict[str, Any] = {}
    if settings.resume and RunDir.at(run).checkpoint_path.exists():
        data = load_checkpoint(run)
        state = algo.restore(data["algorithm"], source=str(RunDir.at(run).checkpoint_path))
        details = dict(data.get("details", {}))
    else:  # a new run, or one killed before its first checkpoint: start at generation 0
        run.mkdir(parents=True, exist_ok=True)
        state = algo.init(settings.seed)
    header = _header(settings, identity, evaluator)
    _write_meta(run, header, algo, state, status="running")
    if settings.resume:  # tables may lag the checkpoint if killed in between
        write_tables(run, algo, state, details)
    fresh: dict[str, Any] = {}  # details of the generation being scored

    def evaluate(configs: list[Any]) -> list[dict[str, float]]:
        with tqdm(total=len(configs) * (2 if evaluator.latency else 1),
                  desc=f"generation {state.generation}", unit="cand", leave=False,
                  disable=not settings.progress, file=sys.stderr) as inner:

            def tick(phase: str, index: int, evaluation: Evaluation) -> None:
                inner.update(1)
                if on_result is not None:
                    on_result(evaluator, phase, index, evaluation)

            evaluations = evaluator.evaluate(configs, on_result=tick)
        fresh.update({e.key: {"worker": e.worker, "seconds": e.seconds, "info": dict(e.info)}
                      for e in evaluations})
        return [dict(e.metrics) for e in evaluations]

    def checkpoint(dump: dict[str, Any]) -> None:
        details.update(fresh)
        fresh.clear()
        RunDir.at(run).write_checkpoint({
            "format": CHECKPOINT_FORMAT, "generation": state.generation,
            "algorithm": dump, "details": details,
        })
        write_tables(run, algo, state, details)
        _write_meta(run, header, algo, state, status="running")

    bar = tqdm(total=settings.generations, initial=state.generation, desc="search",
               unit="gen", disable=not settings.progress, file=sys.stderr)

    def progress(report: Any, current: Any) -> None:
        hv = report.hypervolume
        bar.set_postfix(front=report.front_size, hv=f"{hv:.4g}" if hv is not None else "-",
                        evals=report.evaluations)
        bar.update(1)
        if on_generation is not None:
            on_generation(report, current)

    try:
        evolve(algo, evaluate, resume=state, checkpoint=checkpoint, on_generation=progress)
    finally:
        bar.close()
    if settings.baselines and not RunDir.at(run).baselines_path.exists():
        _score_baselines(run, algo, state, costs, evaluator, details)
    if settings.baselines and not (run / COMPARISONS).exists():
        _compare_front(settings, run, algo, state, costs, identity)
    _write_meta(run, header, algo, state, status="finished",
                seconds=time.perf_counter() - began)
    last = state.history[-1] if state.history else None
    return SearchOutcome(run, state.generation, state.evaluations,
                         last.front_size if last else 0, last.hypervolume if last else None,
                         time.perf_counter() - began)


def _score_baselines(run: Path, algo: SearchAlgorithm, state: SearchState, costs: CheapCosts,
                     evaluator: SerialEvaluator | RayEvaluator,
                     details: dict[str, Any]) -> None:
    """Scores the space's named reference subnets with the search's own scorer (cheap costs
    + evaluator, exactly as a candidate) and writes RUN_DIR/baselines.csv. A baseline the
    search already scored reuses its archive entry."""

    named = costs.space.dense_baselines()
    todo = {name: c for name, c in named.items() if c.key() not in state.archive}
    scored = {e.key: e for e in evaluator.evaluate(list(todo.values()))} if todo else {}
    entries: dict[str, Any] = {}
    for name, config in named.items():
        key = config.key()
        if key in state.archive:
            entries[name] = Entry(key, config, dict(state.archive[key].metrics),
                                  state.generation, "baseline")
            continue
        e = scored[key]
        details.setdefault(key, {"worker": e.worker, "seconds": e.seconds, "info": dict(e.info)})
        entries[name] = Entry(key, config, {**costs(config), **dict(e.metrics)},
                              state.generation, "baseline")
    write_baselines(run, baseline_table(algo, entries, details))


def _compare_front(settings: SearchSettings, run: Path, algo: SearchAlgorithm,
                   state: SearchState, costs: CheapCosts,
                   identity: dict[str, Any]) -> None:
    """Paired tests of the front against the baselines (`automoe.search.compare`), scored
    in this process on the weights the search scored (the checkpoint's sha256 is checked)."""

    checkpoint = checkpoints.read_supernet(settings.supernet)
    if settings.space is not None:
        checkpoint = checkpoints.with_space(checkpoint, settings.space)
    if checkpoint.sha256 != identity["supernet"]["sha256"]:
        raise ValueError(f"{checkpoint.file}: changed while the search ran (sha256 differs); "
                         "the comparisons would use other weights than the scores")
    factory = scoring.CandidateScorerFactory.of(checkpoint, settings.data,
                                                _scoring_settings(settings, bleu=True))
    front = {key: state.archive[key].genome for key in algo.front_keys(state)}
    write_comparisons(run, front, costs.space.dense_baselines(), factory, checkpoint.state,
                      progress=settings.progress)


def _header(settings: SearchSettings, identity: dict[str, Any], evaluator: Any
            ) -> dict[str, Any]:
    return {
        "format": "automoe.search/1",
        "label": Path(settings.out).name,
        "settings": settings.to_json(),
        "seed": settings.seed,
        "metrics": {m.column: m.description for m in METRICS.values()},
        **identity,
        "data": str(Path(settings.data).resolve()),
        "evaluator": evaluator.description,
        "versions": _versions(),
    }


def _write_meta(run: Path, header: dict[str, Any], algo: SearchAlgorithm, state: SearchState, *,
                status: str,
                seconds: float | None = None) -> None:
    doc = {
        **header,
        "algorithm": algo.header(),
        "status": status,
        "generations_done": state.generation,
        "evaluations": state.evaluations,
        "reference_point": None if state.reference is None else list(state.reference),
        "history": [h.to_json() for h in state.history],
    }
    if seconds is not None:
        doc["seconds"] = seconds
    RunDir.at(run).write_meta(doc)
