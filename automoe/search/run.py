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

RUN_DIR holds ``checkpoint.json`` (the algorithm's state: population, archive = cache, RNG,
generation; plus per-candidate details), ``candidates.csv``, ``pareto.csv`` and
``search.json`` (settings, seeds, versions, supernet/space/data identity, protocols,
per-generation history, status). ``resume=True`` continues from the checkpoint and ends
exactly where an uninterrupted run ends (scores are deterministic; latency is measured).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automoe.io_utils import atomic_write_json
from automoe.search.evaluators import Evaluation, RayEvaluator, SerialEvaluator
from automoe.search.objectives import (
    DEFAULT_OBJECTIVES,
    METRICS,
    needed_metrics,
    parse_constraint,
    parse_objectives,
)
from automoe.search.results import write_tables

__all__ = ["SearchSettings", "SearchOutcome", "run_search", "resume_settings", "build_algorithm", "ALGORITHM_NAMES",
           "CHECKPOINT_FORMAT", "load_checkpoint"]

CHECKPOINT_FORMAT = "automoe.search.checkpoint/1"
ALGORITHM_NAMES = {"nsga2": "nsga2", "hat": "hat-ga", "hat-ga": "hat-ga", "random": "random"}
# Settings that only say *how* the search runs: they may change on --resume. Threads and
# device stay: they are part of the latency protocol.
EXECUTION_FIELDS = ("out", "workers", "ray_address", "generations", "progress", "resume")


@dataclass(frozen=True)
class SearchSettings:
    """Everything `run_search` needs; ``search.json`` stores it.

    Attributes:
        supernet: supernet training RUN_DIR (its checkpoint holds the weights + space).
        data: prepared data dir (``automoe data prepare``); its ``valid`` split is scored.
        out: the search RUN_DIR to write.
        objectives: metric names (`objectives.METRICS`), e.g. ("bleu", "flops", "latency").
        constraints: bounds like "latency<=80ms", "flops<=2e9".
        algorithm: "nsga2", "hat" (HAT's GA on the first objective) or "random".
        generations: generations (HAT: iterations), the initial population included.
        population: population size (NSGA-II, GA) or batch size (random search).
        seed: seeds the search's only RNG.
        workers: Ray actors; 0 scores serially in this process (no Ray).
        threads_per_worker: CPUs (and torch threads) per actor.
        device: "cpu", or "cuda": every actor owns one GPU (scores and measures latency
            on it, so latencies are measured in parallel, one per GPU).
        ray_address: join this cluster ("host:port" or "auto"); None starts a local one.
        dev_sentences: size of the fixed dev subset (the first N of the valid split).
        beam: beam size for BLEU decoding (1 = greedy).
        latency_runs, latency_warmup: timed / untimed samples per latency measurement.
        predictor: latency predictor dir, needed for "predicted_latency".
        resume: continue RUN_DIR from its checkpoint.
        progress: show progress bars (stderr).
    """

    supernet: str
    data: str
    out: str
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    constraints: tuple[str, ...] = ()
    algorithm: str = "nsga2"
    generations: int = 10
    population: int = 16
    seed: int = 0
    workers: int = 2
    threads_per_worker: int = 1
    device: str = "cpu"
    ray_address: str | None = None
    dev_sentences: int = 64
    beam: int = 1
    latency_runs: int = 10
    latency_warmup: int = 2
    predictor: str | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("generations", "population", "dev_sentences", "beam", "latency_runs",
                     "threads_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"search setting '{name}' must be an integer >= 1, got {value!r}")
        if self.workers < 0 or self.latency_warmup < 0:
            raise ValueError(f"search settings: workers ({self.workers}) and latency_warmup "
                             f"({self.latency_warmup}) must be >= 0")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {self.device!r}: expected 'cpu' or 'cuda'")
        if self.algorithm not in ALGORITHM_NAMES:
            raise ValueError(f"--algorithm {self.algorithm!r}: expected one of "
                             f"{sorted(set(ALGORITHM_NAMES) - {'hat-ga'})}")
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        parse_objectives(self.objectives)  # unknown names fail at construction
        for text in self.constraints:
            parse_constraint(text)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objectives"], data["constraints"] = list(self.objectives), list(self.constraints)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str) -> SearchSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}")
        data = dict(data)
        for key in ("objectives", "constraints"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class SearchOutcome:
    """Where the run's files are and what it found."""

    run_dir: Path
    generations: int
    evaluations: int
    front_size: int
    hypervolume: float | None
    seconds: float


def build_algorithm(settings: SearchSettings, space: Any, objectives, constraints,
                    pre_filter=None):
    """The `evolution` algorithm the settings name, sized by ``population``/``generations``."""
    from evolution import GASettings, NSGA2Settings, RandomSettings, get_algorithm

    name = ALGORITHM_NAMES[settings.algorithm]
    p, g = settings.population, settings.generations
    if name == "nsga2":
        algo_settings: Any = NSGA2Settings(population_size=max(2, p), iterations=g)
    elif name == "hat-ga":
        # HAT's split of 125 = 25 parents + 50 mutants + 50 crossovers, scaled to p.
        parents = max(2, round(p / 5)) if p >= 4 else 1
        mutation = (p - parents) // 2
        crossover = p - parents - mutation if parents >= 2 else 0
        mutation = p - parents - crossover
        algo_settings = GASettings(population_size=p, parent_size=parents,
                                   mutation_size=mutation, crossover_size=crossover,
                                   iterations=g)
    else:
        algo_settings = RandomSettings(batch_size=p, iterations=g)
    cls = get_algorithm(name)
    return cls(space, objectives=objectives, constraints=constraints,
               pre_filter=pre_filter, settings=algo_settings)


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
    path = Path(run_dir) / "checkpoint.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (was this search ever started?)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return data


def _stored_settings(run_dir: str | Path) -> dict[str, Any]:
    meta_path = Path(run_dir) / "search.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a search run directory (nothing to resume)")
    return json.loads(meta_path.read_text(encoding="utf-8"))["settings"]


def resume_settings(run_dir: str | Path, **overrides: Any) -> SearchSettings:
    """The settings RUN_DIR was started with, for ``--resume``.

    ``overrides`` may change the execution fields (workers, Ray address, threads, more
    generations, progress); any other field must equal the stored value (ValueError).
    """
    stored = _stored_settings(run_dir)
    for name, value in overrides.items():
        if name in EXECUTION_FIELDS:
            continue
        given = json.loads(json.dumps(list(value) if isinstance(value, tuple) else value))
        if name not in stored or stored[name] != given:
            raise ValueError(
                f"--resume {run_dir}: {name}={given!r} differs from the stored "
                f"{stored.get(name)!r}; only {sorted(EXECUTION_FIELDS)} may change on resume"
            )
    merged = {**stored, **overrides, "out": str(run_dir), "resume": True}
    return SearchSettings.from_json(merged, source=str(Path(run_dir) / "search.json"))


def _check_resume(settings: SearchSettings) -> None:
    stored = _stored_settings(settings.out)
    ours = settings.to_json()
    diff = sorted(k for k in ours if k not in EXECUTION_FIELDS and stored.get(k) != ours[k])
    if diff:
        raise ValueError(f"--resume {settings.out}: settings {diff} differ from search.json "
                         "(use resume_settings to load them)")


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
    from automoe.search import scoring
    from evolution import step

    began = time.perf_counter()
    run = Path(settings.out)
    if settings.resume:
        _check_resume(settings)
    elif (run / "checkpoint.json").exists():
        raise ValueError(f"{run}: already holds a search (checkpoint.json); pass --resume to "
                         "continue it or choose another --out")
    objectives = parse_objectives(settings.objectives)
    constraints = tuple(parse_constraint(c) for c in settings.constraints)
    metrics = needed_metrics(objectives, constraints)
    kinds = {m.kind for m in metrics}
    if "predicted_latency" in {m.name for m in metrics} and not settings.predictor:
        raise ValueError("objective/constraint 'predicted_latency' needs --predictor DIR")

    # 2: the cluster answers before we load anything.
    if settings.workers and settings.ray_address:
        check_ray_address(settings.ray_address)
    # 3: the checkpoint (weights checked against its space) and the data it is scored on.
    checkpoint = scoring.read_supernet(settings.supernet)
    scoring.check_data(settings.data, checkpoint.vocab_size,
                       dev_sentences=settings.dev_sentences)
    # 4: bounds on cheap metrics against the most favourable subnet.
    costs = scoring.CheapCosts(checkpoint, predictor=settings.predictor)
    costs.check_constraints(constraints)
    scoring_settings = scoring.ScoringSettings(
        dev_sentences=settings.dev_sentences, bleu=any(m.name == "bleu" for m in metrics),
        beam=settings.beam, threads=settings.threads_per_worker, device=settings.device,
        latency_runs=settings.latency_runs, latency_warmup=settings.latency_warmup)
    factory = scoring.CandidateScorerFactory.of(checkpoint, settings.data, scoring_settings)
    shared = checkpoint.state
    checkpoint_identity = checkpoint.identity()
    latency = "latency" in kinds
    ray_started = False
    evaluator: Any = None
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
        if latency and any(c.name == "latency_ms" for c in constraints):
            _check_latency_constraint(evaluator, costs, constraints)
        identity = {"supernet": checkpoint_identity, "space": costs.space_identity(),
                    "protocols": costs.protocols(
                        scoring_settings.latency_protocol(costs.vocab_size).describe()
                        if latency else None)}
        return _generations(settings, run, objectives, constraints, costs, evaluator,
                            identity, began, on_generation, on_result, step)
    finally:
        if evaluator is not None:
            evaluator.close()
        if ray_started:
            import ray

            ray.shutdown()


def _init_ray(settings: SearchSettings) -> bool:
    """Starts a local Ray (True) or joins ``ray_address`` / an already running one."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no ~/.ray token for a local run
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=settings.workers * settings.threads_per_worker,
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


def _check_latency_constraint(evaluator: Any, costs: Any, constraints) -> None:
    smallest = costs.space.smallest()
    result = evaluator.evaluate([smallest])[0]
    for c in constraints:
        if c.name == "latency_ms" and not c.satisfied(result.metrics["latency_ms"]):
            raise ValueError(
                f"constraint {c.name}{c.op}{c.bound:g} cannot be met: the smallest subnet of "
                f"space {costs.space.name!r} measures {result.metrics['latency_ms']:.3g} ms "
                f"({result.info.get('latency_device', 'this device')})"
            )


def _generations(settings, run, objectives, constraints, costs, evaluator, identity, began,
                 on_generation, on_result, step) -> SearchOutcome:
    from tqdm.auto import tqdm

    algo = build_algorithm(settings, costs.space, objectives, constraints, costs.pre_filter)
    details: dict[str, Any] = {}
    if settings.resume:
        data = load_checkpoint(run)
        state = algo.restore(data["algorithm"], source=str(run / "checkpoint.json"))
        details = dict(data.get("details", {}))
    else:
        run.mkdir(parents=True, exist_ok=True)
        state = algo.init(settings.seed)
    header = _header(settings, identity, evaluator)
    _write_meta(run, header, algo, state, status="running")
    if settings.resume:  # tables may lag the checkpoint if killed in between
        write_tables(run, algo, state, details)
    bar = tqdm(total=settings.generations, initial=state.generation, desc="search",
               unit="gen", disable=not settings.progress, file=sys.stderr)
    try:
        while not algo.done(state):
            fresh: dict[str, Any] = {}
            inner = tqdm(desc=f"generation {state.generation}", unit="cand", leave=False,
                         disable=not settings.progress, file=sys.stderr)

            def evaluate(configs: list[Any], fresh=fresh, inner=inner) -> list[Any]:
                inner.reset(total=len(configs) * (2 if evaluator.latency else 1))

                def tick(phase: str, index: int, evaluation: Evaluation) -> None:
                    inner.update(1)
                    if on_result is not None:
                        on_result(evaluator, phase, index, evaluation)

                evaluations = evaluator.evaluate(configs, on_result=tick)
                for e in evaluations:
                    fresh[e.key] = {"worker": e.worker, "seconds": e.seconds,
                                    "info": dict(e.info)}
                return [dict(e.metrics) for e in evaluations]

            report = step(algo, state, evaluate)
            inner.close()
            details.update(fresh)
            atomic_write_json(run / "checkpoint.json", {
                "format": CHECKPOINT_FORMAT, "generation": state.generation,
                "algorithm": algo.dump(state), "details": details,
            })
            write_tables(run, algo, state, details)
            _write_meta(run, header, algo, state, status="running")
            hv = report.hypervolume
            bar.set_postfix(front=report.front_size, hv=f"{hv:.4g}" if hv is not None else "-",
                            evals=report.evaluations)
            bar.update(1)
            if on_generation is not None:
                on_generation(report, state)
    finally:
        bar.close()
    _write_meta(run, header, algo, state, status="finished",
                seconds=time.perf_counter() - began)
    last = state.history[-1] if state.history else None
    return SearchOutcome(run, state.generation, state.evaluations,
                         last.front_size if last else 0, last.hypervolume if last else None,
                         time.perf_counter() - began)


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


def _write_meta(run: Path, header: dict[str, Any], algo: Any, state: Any, *, status: str,
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
    atomic_write_json(run / "search.json", doc)
