"""Drives a `SearchAlgorithm` with an injected evaluator: one generation at a time, with
a checkpoint hook and a progress callback after each, and resumption from a checkpoint.

The evaluator is the seam for distribution: ``evaluate(genomes) -> list[metrics]`` gets
every not-yet-evaluated genome of a generation in **one** call (a serial loop, or a fan-out
over Ray actors), and must return one ``dict[str, float]`` per genome, in order. Genomes
already in the archive are never passed again (the cache).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import SearchAlgorithm
from .objectives import Constraint, Objective
from .state import Entry, GenerationReport, Record, SearchState

__all__ = ["Evaluator", "SearchResult", "step", "run_search"]

Evaluator = Callable[[list[Any]], Sequence[Mapping[str, float]]]


def step(algo: SearchAlgorithm, state: SearchState, evaluate: Evaluator) -> GenerationReport:
    """Runs one generation: ask, evaluate the new genomes in one batch, tell.

    Transactional: if the evaluator (or metric validation) raises, ``state`` is left as it
    was (its RNG included), so retrying the step asks for the very same batch.
    """
    if algo.done(state):
        raise ValueError(f"{algo.name}: search already finished ({state.generation} generations)")
    saved = state.rng.getstate()
    try:
        batch = algo.ask(state)
        fresh, seen = [], set()
        for c in batch:  # each new key once, in first-occurrence order
            if c.key not in state.archive and c.key not in seen:
                seen.add(c.key)
                fresh.append(c)
        results = list(evaluate([c.genome for c in fresh])) if fresh else []
        if len(results) != len(fresh):
            raise ValueError(
                f"evaluator returned {len(results)} metric dicts for {len(fresh)} genomes"
            )
        metrics = {c.key: m for c, m in zip(fresh, results, strict=True)}
        return algo.tell(state, batch, metrics)
    except BaseException:
        state.rng.setstate(saved)
        raise


@dataclass(frozen=True)
class SearchResult:
    """Everything a search produced.

    Attributes:
        entries: every distinct evaluated genome, in evaluation order (candidates.csv).
        records: every candidate of every generation, cached repeats included.
        front: the feasible, non-dominated entries over all objectives (pareto.csv).
        best: the best feasible entry by the first objective (the GA's answer), or None.
        history: one report per generation.
        state: the final state (``algorithm.dump(state)`` to save it).
    """

    algorithm: str
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    entries: list[Entry]
    records: list[Record]
    front: list[Entry]
    best: Entry | None
    history: list[GenerationReport]
    state: SearchState
    encode: Callable[[Any], Any]

    @property
    def evaluations(self) -> int:
        return len(self.entries)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per distinct evaluated genome, ready for a DataFrame/CSV: key,
        generation, origin, feasible, on_front, the metrics, and the genome as JSON."""
        on_front = {e.key for e in self.front}
        rows = []
        for e in self.entries:
            violation = sum(c.violation(e.metrics[c.name]) for c in self.constraints)
            rows.append(
                {
                    "key": e.key,
                    "generation": e.generation,
                    "origin": e.origin,
                    "feasible": violation == 0,
                    "on_front": e.key in on_front,
                    **e.metrics,
                    "genome": json.dumps(self.encode(e.genome), sort_keys=True),
                }
            )
        return rows


def result_of(algo: SearchAlgorithm, state: SearchState) -> SearchResult:
    """The `SearchResult` view of a state (finished or not)."""
    best = algo.best_key(state)
    return SearchResult(
        algorithm=algo.name,
        objectives=algo.objectives,
        constraints=algo.constraints,
        entries=list(state.archive.values()),
        records=state.iter_records(),
        front=[state.archive[k] for k in algo.front_keys(state)],
        best=None if best is None else state.archive[best],
        history=list(state.history),
        state=state,
        encode=algo.ops.to_json,
    )


def run_search(
    algo: SearchAlgorithm,
    evaluate: Evaluator,
    *,
    seed: int | random.Random | None = None,
    resume: Mapping[str, Any] | SearchState | None = None,
    on_generation: Callable[[GenerationReport, SearchState], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Runs ``algo`` to the end and returns its result.

    Args:
        evaluate: the batch evaluator (see module doc).
        seed: int or ``random.Random`` for a fresh search (ignored when resuming).
        resume: a checkpoint (``algo.dump`` output, e.g. read back from JSON) or a state;
            the run continues from it and ends exactly as an uninterrupted one would.
        on_generation: called after every generation (progress bars, logs).
        checkpoint: called after every generation with ``algo.dump(state)``, JSON-ready;
            write it atomically (``search_spaces.files.atomic_write_json``).
    """
    if resume is None:
        if seed is None:
            raise ValueError("run_search: pass seed (int or random.Random) or resume")
        state = algo.init(seed)
    elif isinstance(resume, SearchState):
        state = resume
    else:
        state = algo.restore(resume)
    while not algo.done(state):
        report = step(algo, state, evaluate)
        if checkpoint is not None:
            checkpoint(algo.dump(state))
        if on_generation is not None:
            on_generation(report, state)
    return result_of(algo, state)
