"""Search settings: the frozen `SearchSettings` record stored in ``search.json``, how it
maps to an `evolution` algorithm, and what may change when a run is resumed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automoe.run_dir import RunDir
from automoe.search.objectives import DEFAULT_OBJECTIVES, parse_constraint, parse_objectives
from search_spaces.checks import check_ints, check_known_fields

if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

__all__ = ["SearchSettings", "ALGORITHM_NAMES", "EXECUTION_FIELDS", "LATENCY_CACHE_FILE",
           "NOT_FROM_RUN_DIR", "build_algorithm", "resume_settings", "check_resume"]

ALGORITHM_NAMES = {"nsga2": "nsga2", "hat": "hat-ga", "hat-ga": "hat-ga", "random": "random"}
# Settings that only say *how* the search runs: they may change on --resume. Threads and
# device stay: they are part of the latency protocol.
EXECUTION_FIELDS = ("out", "workers", "ray_address", "generations", "progress", "resume",
                    "latency_cache")
LATENCY_CACHE_FILE = "latency_cache.jsonl"  # default: in the supernet's run dir
# What a run directory must never choose on resume (docs/protocols.md, "Trust"): where we
# connect (Ray exchanges pickles with its cluster) and where we write outside the run. They
# come from the command line of the resuming user, or take their defaults.
NOT_FROM_RUN_DIR = ("ray_address", "latency_cache")


@dataclass(frozen=True)
class SearchSettings:
    """Everything `run_search` needs; ``search.json`` stores it.

    Attributes:
        supernet: supernet training RUN_DIR (its checkpoint holds the weights + space).
        space: search this space (name or YAML) instead of the checkpoint's: it must differ
            from it only in ``expert_bits`` (e.g. ``demo_q`` on a ``demo`` supernet); None:
            the checkpoint's space.
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
        dev_sentences: size of the fixed dev set (the first N of the valid split; 0: all).
        task: a multilingual data dir's target language: score on its dev pairs only, and
            cost what serving it costs (each task-routed layer as the dense FFN of that
            task's experts, `supernet.task_extract`); None: every task's pairs, the routed
            model's costs.
        beam: beam size for BLEU decoding (1 = greedy).
        latency_runs, latency_warmup: timed / untimed samples per latency measurement.
        latency_cache: JSONL file of latency measurements (`automoe.costs.latency_cache`)
            shared by every search on the machine that names it; None: ``latency_cache.jsonl``
            beside the supernet checkpoint; "none": measure every latency, store nothing. A
            measurement is reused only for the same subnet, protocol (runs, warm-up,
            threads...), supernet weights and device fingerprint.
        predictor: latency predictor dir, needed for "predicted_latency".
        baselines: after the last generation, score the space's reference subnets
            (`SearchSpace.dense_baselines`: largest, largest-dense, transformer-base...)
            with the same scorer into ``baselines.csv`` (plots mark them).
        resume: continue RUN_DIR from its checkpoint.
        progress: show progress bars (stderr).
    """

    supernet: str
    data: str
    out: str
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    constraints: tuple[str, ...] = ()
    space: str | None = None
    algorithm: str = "nsga2"
    generations: int = 10
    population: int = 16
    seed: int = 0
    workers: int = 2
    threads_per_worker: int = 1
    device: str = "cpu"
    ray_address: str | None = None
    dev_sentences: int = 0
    task: str | None = None
    beam: int = 1
    latency_runs: int = 10
    latency_warmup: int = 2
    latency_cache: str | None = None
    predictor: str | None = None
    baselines: bool = True
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_ints("search settings", self, {
            "generations": 1, "population": 1, "dev_sentences": 0, "beam": 1,
            "latency_runs": 1, "threads_per_worker": 1})
        if self.workers < 0 or self.latency_warmup < 0:
            raise ValueError(f"search settings: workers ({self.workers}) and latency_warmup "
                             f"({self.latency_warmup}) must be >= 0")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {self.device!r}: expected 'cpu' or 'cuda'")
        if self.algorithm in ("nsga2",) and self.population < 2:
            raise ValueError(f"--population {self.population}: NSGA-II needs at least 2 (its "
                             "tournaments compare two candidates)")
        if self.algorithm not in ALGORITHM_NAMES:
            raise ValueError(f"--algorithm {self.algorithm!r}: expected one of "
                             f"{sorted(set(ALGORITHM_NAMES) - {'hat-ga'})}")
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        parse_objectives(self.objectives)  # unknown names fail at construction
        for text in self.constraints:
            parse_constraint(text)

    def latency_cache_path(self, checkpoint_file: str | Path) -> Path | None:
        """The latency cache file this search uses (None: no cache), given the supernet
        checkpoint file it scores."""
        if self.latency_cache == "none":
            return None
        if self.latency_cache is None:
            return Path(checkpoint_file).resolve().parent / LATENCY_CACHE_FILE
        return Path(self.latency_cache).resolve()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objectives"], data["constraints"] = list(self.objectives), list(self.constraints)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str) -> SearchSettings:
        check_known_fields(cls, data, source=source, what="setting(s)")
        data = dict(data)
        for key in ("objectives", "constraints"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def build_algorithm(settings: SearchSettings, space: SearchSpace, objectives, constraints,
                    pre_filter=None):
    """The `evolution` algorithm the settings name, sized by ``population``/``generations``."""
    from evolution import GASettings, NSGA2Settings, RandomSettings, get_algorithm

    name = ALGORITHM_NAMES[settings.algorithm]
    p, g = settings.population, settings.generations
    if name == "nsga2":
        algo_settings: Any = NSGA2Settings(population_size=p, iterations=g)
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


def _stored_settings(run_dir: str | Path) -> dict[str, Any]:
    files = RunDir.at(run_dir)
    if not files.has_meta():
        raise FileNotFoundError(f"{files.meta_path}: not a search run directory (nothing to "
                                "resume)")
    return files.read_settings()


def resume_settings(run_dir: str | Path, **overrides: Any) -> SearchSettings:
    """The settings RUN_DIR was started with, for ``--resume``.

    ``overrides`` may change the execution fields (workers, Ray address, threads, more
    generations, progress); any other field must equal the stored value (ValueError). The
    stored `NOT_FROM_RUN_DIR` fields are ignored: only ``overrides`` set them.
    """
    stored = {k: v for k, v in _stored_settings(run_dir).items() if k not in NOT_FROM_RUN_DIR}
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
    return SearchSettings.from_json(merged, source=str(RunDir.at(run_dir).meta_path))


def check_resume(settings: SearchSettings) -> None:
    """ValueError unless ``settings`` equal the stored ones (execution fields aside)."""
    source = str(RunDir.at(settings.out).meta_path)
    # Through the dataclass: a field added since the run was started takes its default.
    stored = SearchSettings.from_json(_stored_settings(settings.out), source=source).to_json()
    ours = settings.to_json()
    diff = sorted(k for k in ours if k not in EXECUTION_FIELDS and stored.get(k) != ours[k])
    if diff:
        raise ValueError(f"--resume {settings.out}: settings {diff} differ from search.json "
                         "(use resume_settings to load them)")
