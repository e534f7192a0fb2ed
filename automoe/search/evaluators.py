"""The evaluator seam: score a batch of subnets serially or on a pool of Ray actors.

Both evaluators take the same two things: a picklable *scorer factory* ``factory(shared)
-> Scorer`` and the *shared payload* it needs (for the real search: the supernet's state
dict as numpy arrays). `SerialEvaluator` builds one scorer in this process.
`RayEvaluator` puts the payload into the object store **once** and starts a pool of
long-lived actors; each resolves the payload (numpy arrays arrive zero-copy) and builds its
own scorer, so the supernet is loaded once per actor, never once per candidate.

Scoring has two phases per batch:

1. *quality*: ``scorer.score(config)`` (dev loss, BLEU, cheap costs) on every actor at once;
2. *latency* (only when asked): ``scorer.latency(config)``. A latency measurement must own
   its device: on CPU the actors share the cores, so all latencies of a batch are measured
   by one actor after phase 1 has finished (the others are idle); with one GPU per actor
   (``gpus_per_worker=1``) every actor measures on its own GPU.

Fault tolerance: an actor that dies (crash, OOM kill, ``ray.kill``) is replaced by a fresh
one built from the same object-store payload and the candidates it held are re-queued, so
the batch's results are the same as without the failure. A Python exception raised by a
scorer is a bug or bad input and is re-raised, naming the candidate.

Results come back in input order whatever worker scored them, so for a deterministic scorer
``RayEvaluator(...).evaluate(cs) == SerialEvaluator(...).evaluate(cs)`` (the ``worker`` and
``seconds`` fields aside).
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from automoe.devices import torch_threads

__all__ = [
    "Score",
    "Evaluation",
    "Scorer",
    "ScorerFactory",
    "ScoringWorker",
    "SerialEvaluator",
    "RayEvaluator",
    "ProgressFn",
]


@dataclass(frozen=True)
class Score:
    """What a scorer returns for one subnet.

    ``metrics`` are numbers (they feed the search and its checkpoint); ``info`` are strings
    for the result tables only (e.g. the latency device fingerprint).
    """

    metrics: Mapping[str, float]
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """One scored subnet: the merged phases, the worker of the quality phase (the
    latency phase's is ``info["latency_worker"]``) and the wall time of both phases."""

    key: str
    metrics: Mapping[str, float]
    info: Mapping[str, str]
    worker: str
    seconds: float


class Scorer(Protocol):
    def score(self, config: Any) -> Score:
        """Quality and cheap costs of one subnet; must be deterministic."""
        ...

    def latency(self, config: Any) -> Score:
        """Measured latency of one subnet (called only when the device is exclusive)."""
        ...


ScorerFactory = Callable[[Any], Scorer]
# on_result(phase, index, evaluation_so_far): called as each candidate's phase finishes.
ProgressFn = Callable[[str, int, "Evaluation"], None]

_PHASES = ("score", "latency")


def _normal_priority() -> int:
    """Undoes Ray's default worker niceness (15) where permitted; returns the niceness.

    Niced actors on a machine with other load scored 3-5x slower than the same work in the
    driver (measured here), and a latency measured at nice 15 is not the latency a deployed
    model sees. `run_search` starts local clusters with RAY_worker_niceness=0 instead.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:  # lowering niceness needs privileges (RLIMIT_NICE / CAP_SYS_NICE)
        pass
    return os.getpriority(os.PRIO_PROCESS, 0)


# One finished phase of one candidate: (phase, score, worker name, seconds).
_Part = tuple[str, Score, str, float]


def _merge(key: str, parts: Sequence[_Part]) -> Evaluation:
    """Joins the phases; the latency phase's worker goes to ``info["latency_worker"]``."""
    metrics: dict[str, float] = {}
    info: dict[str, str] = {}
    worker = ""
    for phase, score, name, _ in parts:
        metrics.update({k: float(v) for k, v in score.metrics.items()})
        info.update({k: str(v) for k, v in score.info.items()})
        if phase == "score":
            worker = name
        else:
            info[f"{phase}_worker"] = name
    return Evaluation(key, metrics, info, worker, sum(p[3] for p in parts))


class ScoringWorker:
    """Holds one scorer; a plain class, made a Ray actor at the call site
    (``ray.remote(ScoringWorker)``) and used directly by `SerialEvaluator`."""

    def __init__(self, factory: ScorerFactory, shared: Any, *, threads: int | None,
                 name: str) -> None:
        self.name = name
        self.nice = _normal_priority()
        self.scorer = factory(shared)
        # The actor's count for its whole life (nothing to restore): Ray sets OMP_NUM_THREADS
        # per actor, but a process that imported torch earlier keeps its old count. A
        # torch-free scorer never pays torch's import.
        if threads and "torch" in sys.modules:
            import torch

            torch.set_num_threads(int(threads))

    def ready(self) -> str:
        return f"{self.name} pid={os.getpid()} nice={self.nice}"

    def run(self, phase: str, index: int, config: Any) -> tuple[int, Score, float]:
        start = time.perf_counter()
        score = getattr(self.scorer, phase)(config)
        if not isinstance(score, Score):
            raise TypeError(f"{type(self.scorer).__name__}.{phase} returned "
                            f"{type(score).__name__}, expected Score")
        return index, score, time.perf_counter() - start


class SerialEvaluator:
    """Scores in this process, one candidate after another (tests, debugging, 1 core).

    Args:
        factory, shared: as for `RayEvaluator`.
        threads: torch threads while scoring (restored afterwards); None leaves them.
        latency: also run the latency phase.
    """

    def __init__(self, factory: ScorerFactory, shared: Any, *, threads: int | None = None,
                 latency: bool = False) -> None:
        self.threads = threads
        self.latency = latency
        with torch_threads(threads or None):
            self.worker = ScoringWorker(factory, shared, threads=None, name="serial")

    @property
    def description(self) -> str:
        return f"serial (1 process, {self.threads or 'default'} torch threads)"

    def evaluate(self, configs: Sequence[Any], on_result: ProgressFn | None = None
                 ) -> list[Evaluation]:
        phases = _PHASES if self.latency else _PHASES[:1]
        parts: list[list[_Part]] = [[] for _ in configs]
        with torch_threads(self.threads or None):
            for phase in phases:
                for i, config in enumerate(configs):
                    _, score, seconds = self.worker.run(phase, i, config)
                    parts[i].append((phase, score, "serial", seconds))
                    if on_result is not None:
                        on_result(phase, i, _merge(config.key(), parts[i]))
        return [_merge(c.key(), p) for c, p in zip(configs, parts, strict=True)]

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RayEvaluator:
    """Scores on a pool of long-lived Ray actors (Ray must already be initialised).

    Args:
        factory: picklable ``factory(shared) -> Scorer``, called once in each actor.
        shared: the payload every scorer needs (numpy arrays are shared zero-copy).
        workers: number of actors.
        threads_per_worker: CPUs reserved per actor and its torch thread count.
        gpus_per_worker: 0 on CPU; 1 gives each actor its own GPU (parallel latency).
        latency: also run the latency phase.
        inflight: tasks queued per actor (2 hides the round trip between candidates).
        max_retries: times one candidate may be re-queued after its actor died before the
            batch fails (a candidate that kills every actor it meets is an error).
        max_replacements: actors replaced in total before giving up.
        start_timeout: seconds to wait for the pool to start (actors the cluster cannot
            place would otherwise wait forever).
    """

    def __init__(
        self,
        factory: ScorerFactory,
        shared: Any,
        *,
        workers: int,
        threads_per_worker: int = 1,
        gpus_per_worker: float = 0,
        latency: bool = False,
        inflight: int = 2,
        max_retries: int = 2,
        max_replacements: int | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        import ray

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not ray.is_initialized():
            raise ValueError("RayEvaluator needs ray.init() first (see automoe.search.run)")
        self._ray = ray
        self.workers = workers
        self.threads = max(1, int(threads_per_worker))
        self.gpus = gpus_per_worker
        self.latency = latency
        self.inflight = max(1, inflight)
        self.max_retries = max_retries
        self.max_replacements = 3 * workers if max_replacements is None else max_replacements
        self.replacements = 0
        self._factory = factory
        self._shared_ref = ray.put(shared)  # once; every actor (and replacement) reads it
        # SPREAD: one actor per node while nodes last, so a lost node takes few actors
        self._remote = ray.remote(ScoringWorker).options(
            num_cpus=self.threads, num_gpus=gpus_per_worker, max_restarts=0,
            max_concurrency=1, scheduling_strategy="SPREAD",
        )
        self._serial = 0
        self.actors: list[Any] = []
        self.names: list[str] = []
        for slot in range(workers):
            self._start(slot)
        # Surface a failing factory (bad checkpoint, missing data) or a pool the cluster
        # cannot place now, not mid-search.
        try:
            self.ready = ray.get([a.ready.remote() for a in self.actors], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise RuntimeError(
                f"{workers} scoring actor(s) ({self.threads} CPU, {gpus_per_worker} GPU each) "
                f"did not start within {start_timeout:g} s: is the Ray cluster busy?"
            ) from None
        except ray.exceptions.RayActorError as err:
            self.close()
            cause = str(err).strip().splitlines()[-1]  # the scorer's exception line
            raise RuntimeError(f"a scoring actor failed to start: {cause}") from err

    @property
    def description(self) -> str:
        gpu = f", {self.gpus} GPU each" if self.gpus else ""
        return f"ray ({self.workers} actors x {self.threads} CPU{gpu})"

    def _start(self, slot: int) -> None:
        name = f"w{slot}" if self._serial < self.workers else f"w{slot}.{self._serial}"
        self._serial += 1
        actor = self._remote.remote(self._factory, self._shared_ref, threads=self.threads,
                                    name=name)
        if slot < len(self.actors):
            self.actors[slot], self.names[slot] = actor, name
        else:
            self.actors.append(actor)
            self.names.append(name)

    def _replace(self, slot: int, cause: BaseException) -> None:
        self.replacements += 1
        if self.replacements > self.max_replacements:
            raise RuntimeError(
                f"Ray workers died {self.replacements} times (limit {self.max_replacements}); "
                f"last: {self.names[slot]}: {cause}"
            ) from cause
        self._ray.kill(self.actors[slot], no_restart=True)  # in case it is only unreachable
        self._start(slot)

    def evaluate(self, configs: Sequence[Any], on_result: ProgressFn | None = None
                 ) -> list[Evaluation]:
        """Scores ``configs``; results in input order."""
        parts: list[list[_Part]] = [[] for _ in configs]
        # On CPU one actor measures latency while the others idle: no shared cores.
        latency_slots = list(range(self.workers)) if self.gpus >= 1 else [0]
        plan = [("score", list(range(self.workers)), self.inflight)]
        if self.latency:
            plan.append(("latency", latency_slots, 1))
        for phase, slots, depth in plan:
            self._run_phase(phase, configs, slots, depth, parts, on_result)
        return [_merge(c.key(), p) for c, p in zip(configs, parts, strict=True)]

    def _run_phase(self, phase: str, configs: Sequence[Any], slots: list[int], depth: int,
                   parts: list[list[_Part]],
                   on_result: ProgressFn | None) -> None:
        ray = self._ray
        queue = collections.deque(range(len(configs)))
        retries = [0] * len(configs)
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (slot, index)
        load = dict.fromkeys(slots, 0)
        while queue or pending:
            for slot in slots:
                while queue and load[slot] < depth:
                    i = queue.popleft()
                    ref = self.actors[slot].run.remote(phase, i, configs[i])
                    pending[ref] = (slot, i)
                    load[slot] += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                if ref not in pending:  # dropped with a dead actor below
                    continue
                slot, i = pending.pop(ref)
                load[slot] -= 1
                try:
                    index, score, seconds = ray.get(ref)
                except ray.exceptions.RayActorError as err:
                    lost = [i] + [j for r, (s, j) in list(pending.items()) if s == slot]
                    for r in [r for r, (s, _) in pending.items() if s == slot]:
                        del pending[r]
                    load[slot] = 0
                    self._replace(slot, err)  # first: the pool stays whole even if we fail
                    for j in lost:
                        retries[j] += 1
                        if retries[j] > self.max_retries:
                            raise RuntimeError(
                                f"candidate {configs[j].key()}: its Ray worker died "
                                f"{retries[j]} times during '{phase}' ({err})"
                            ) from err
                    queue.extendleft(sorted(lost, reverse=True))
                    break  # the other refs of `done` are re-checked by the next wait
                except ray.exceptions.RayTaskError as err:
                    raise RuntimeError(
                        f"scoring candidate {configs[i].key()} ({phase}) failed on "
                        f"{self.names[slot]}: {err}"
                    ) from err
                assert index == i
                parts[i].append((phase, score, self.names[slot], seconds))
                if on_result is not None:
                    on_result(phase, i, _merge(configs[i].key(), parts[i]))

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
