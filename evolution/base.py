"""What every search algorithm shares: the ask/tell protocol, constrained proposal by
rejection, the evaluation cache, per-generation reports and checkpoints.

A search is a generation-step state machine::

    state = algo.init(random.Random(seed))
    while not algo.done(state):
        batch = algo.ask(state)                  # candidates; draws only from state.rng
        metrics = evaluate(new genomes of batch)  # one call per generation (serial or Ray)
        algo.tell(state, batch, metrics)          # archive, selection, report
        checkpoint(algo.dump(state))              # JSON; algo.restore(data) continues it

`runner.step` / `runner.run_search` drive exactly this loop. Subclasses implement
`ask` and `_select` only.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import random
from collections.abc import Callable, Container, Mapping, MutableSet, Sequence
from typing import Any, ClassVar

import numpy as np

from .genome import GenomeOps, as_genome_ops
from .objectives import (
    Constraint,
    Objective,
    minimization_vector,
    require_metrics,
    total_violation,
)
from .pareto import hypervolume, non_dominated_mask
from .state import Candidate, Entry, GenerationReport, SearchState

__all__ = ["SearchAlgorithm", "UnsatisfiableConstraintError", "PreFilter"]

# A cheap check run on every proposal before it is accepted: False rejects it; a mapping
# gives cheap metrics (e.g. {"flops": ...}) that the constraints naming them are checked on.
PreFilter = Callable[[Any], "bool | Mapping[str, float]"]


class UnsatisfiableConstraintError(ValueError):
    """No acceptable candidate within ``max_tries`` proposals."""


class _RejectionLog:
    """Counts why proposals for one slot were rejected, for a useful error message."""

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = constraints
        self.seen = [0] * len(constraints)
        self.met = [0] * len(constraints)
        self.closest: list[float | None] = [None] * len(constraints)
        self.duplicates = 0
        self.filtered = 0

    def accept(self, pre: Mapping[str, float]) -> bool:
        ok = True
        for i, c in enumerate(self.constraints):
            if c.name not in pre:
                continue  # checked after evaluation instead
            value = pre[c.name]
            self.seen[i] += 1
            closest = self.closest[i]
            if closest is None or c.better(value, closest):
                self.closest[i] = value
            if c.satisfied(value):
                self.met[i] += 1
            else:
                ok = False
        return ok

    def message(self, origin: str, tries: int) -> str:
        noun = "samples" if origin == "sample" else f"{origin} proposals"
        hint = f" (max_tries={tries}; loosen the bound or raise max_tries)"
        for i, c in enumerate(self.constraints):
            if self.seen[i] and not self.met[i]:
                word = "smallest" if c.op == "<=" else "largest"
                return (
                    f"constraint {c} unsatisfiable: 0 of {self.seen[i]} {noun} met it, "
                    f"{word} {c.name} seen {self.closest[i]:g}{hint}"
                )
        if self.duplicates == tries:
            return (
                f"no new candidate in {tries} {noun}: every one duplicated the population "
                "(is the space smaller than the population? turn dedup off)"
            )
        if self.filtered == tries:
            return f"pre_filter rejected all {tries} {noun}{hint}"
        met = ", ".join(
            f"{c} met by {m}/{s}"
            for c, m, s in zip(self.constraints, self.met, self.seen, strict=True)
            if s
        )
        return (
            f"no {origin} candidate was acceptable within max_tries={tries}: {met or 'n/a'}; "
            f"{self.duplicates} duplicates, {self.filtered} rejected by pre_filter"
        )


class SearchAlgorithm(abc.ABC):
    """Base of `GeneticAlgorithm`, `NSGA2` and `RandomSearch`.

    Args:
        ops: a `GenomeOps`, or a `search_spaces.SearchSpace` (wrapped in `SpaceOps`).
        objectives: what is optimised and reported; the GA optimises ``objectives[0]``.
        constraints: hard bounds. Those whose metric the ``pre_filter`` returns are
            enforced by rejection while proposing (HAT); the others are checked on the
            evaluated metrics (infeasible candidates rank behind feasible ones: Deb).
        pre_filter: cheap per-genome check, see `PreFilter`.
        settings: the algorithm's frozen settings dataclass (has ``iterations``,
            ``max_tries``, ``dedup``).
        reference: hypervolume reference point in the objectives' own units, by name;
            None picks one from the first generation (its worst values plus 10% of range).
    """

    name: ClassVar[str]
    settings_type: ClassVar[type]

    def __init__(
        self,
        ops: Any,
        *,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint] = (),
        pre_filter: PreFilter | None = None,
        settings: Any = None,
        reference: Mapping[str, float] | None = None,
    ) -> None:
        self.ops: GenomeOps = as_genome_ops(ops)
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        if not self.objectives:
            raise ValueError(f"{self.name}: needs at least one objective")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate objective names {names}")
        self.settings = self.settings_type() if settings is None else settings
        if not isinstance(self.settings, self.settings_type):
            raise ValueError(
                f"{self.name}: settings must be {self.settings_type.__name__}, "
                f"got {type(self.settings).__name__}"
            )
        self.pre_filter = pre_filter
        self.reference: tuple[float, ...] | None = None
        if reference is not None:
            missing = [n for n in names if n not in reference]
            if missing:
                raise ValueError(f"{self.name}: reference point lacks objective(s) {missing}")
            self.reference = tuple(o.to_min(reference[o.name]) for o in self.objectives)
        self._pre_memo: dict[str, dict[str, float] | None] = {}

    # ---- lifecycle ---------------------------------------------------------------------
    def init(self, rng: random.Random | int) -> SearchState:
        """A fresh state; ``rng`` (or a seed) becomes the search's only source of chance."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        return SearchState(rng=rng, reference=self.reference)

    def done(self, state: SearchState) -> bool:
        return state.generation >= self.settings.iterations

    @abc.abstractmethod
    def ask(self, state: SearchState) -> list[Candidate]:
        """The next generation's candidates. Changes nothing in ``state`` but its RNG."""

    @abc.abstractmethod
    def _select(self, state: SearchState, batch: Sequence[Candidate]) -> None:
        """Sets ``state.population`` once the batch's metrics are in the archive."""

    def tell(
        self,
        state: SearchState,
        batch: Sequence[Candidate],
        metrics: Mapping[str, Mapping[str, float]],
    ) -> GenerationReport:
        """Stores the metrics of the batch's new keys (``metrics[key]``, from the
        evaluator), runs selection and returns the generation's report."""
        if self.done(state):
            raise ValueError(
                f"{self.name}: search already finished ({state.generation} generations)"
            )
        fresh: dict[str, Entry] = {}
        for c in batch:
            if c.key in state.archive or c.key in fresh:
                continue
            if c.key not in metrics:
                raise ValueError(f"{self.name}: no metrics for new candidate {c.key}")
            merged = {**c.pre_metrics, **_as_float_metrics(metrics[c.key], c.key)}
            require_metrics(merged, self._needed(), where=f"candidate {c.key}")
            fresh[c.key] = Entry(c.key, c.genome, merged, state.generation, c.origin)
        for c in batch:  # all validated: now change the state
            cached = c.key in state.archive
            if not cached:
                state.archive[c.key] = fresh[c.key]
            state.records.append((state.generation, c.key, c.origin, cached))
        self._select(state, batch)
        if state.reference is None:
            state.reference = self._auto_reference(state)
        report = self._report(state, asked=len(batch), evaluated=len(fresh))
        state.history.append(report)
        state.generation += 1
        return report

    # ---- checkpoints ---------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this algorithm."""
        return {
            "algorithm": self.name,
            "settings": dataclasses.asdict(self.settings),
            "objectives": [o.to_json() for o in self.objectives],
            "constraints": [c.to_json() for c in self.constraints],
        }

    def dump(self, state: SearchState) -> dict[str, Any]:
        """JSON-ready checkpoint of ``state`` (plus this algorithm's header)."""
        return {**self.header(), "state": state.to_json(self.ops.to_json)}

    def restore(self, data: Mapping[str, Any], *, source: str = "checkpoint") -> SearchState:
        """The state of a `dump`; raises ValueError when it was written by another setup.

        Only ``iterations`` may differ: resuming with more iterations extends the run
        exactly as if it had been started with them.
        """
        ours = json.loads(json.dumps(self.header()))
        for field in ("algorithm", "objectives", "constraints"):
            if data.get(field) != ours[field]:
                raise ValueError(
                    f"{source}: written with {field}={data.get(field)!r}, "
                    f"this search has {ours[field]!r}"
                )
        theirs = dict(data.get("settings") or {})
        for name, value in ours["settings"].items():
            if name != "iterations" and theirs.get(name) != value:
                raise ValueError(
                    f"{source}: written with settings.{name}={theirs.get(name)!r}, "
                    f"this search has {value!r}"
                )
        if "state" not in data:
            raise ValueError(f"{source}: no 'state' key")
        return SearchState.from_json(data["state"], self.ops.from_json, self.ops.key, source=source)

    # ---- metrics views -------------------------------------------------------------------
    def vector(self, state: SearchState, key: str) -> tuple[float, ...]:
        """Objectives of an evaluated key in minimisation space."""
        return minimization_vector(state.archive[key].metrics, self.objectives)

    def violation(self, state: SearchState, key: str) -> float:
        return total_violation(state.archive[key].metrics, self.constraints)

    def front_keys(self, state: SearchState) -> list[str]:
        """Feasible, non-dominated keys of everything evaluated (evaluation order)."""
        keys = [k for k in state.archive if self.violation(state, k) == 0]
        if not keys:
            return []
        mask = non_dominated_mask([self.vector(state, k) for k in keys])
        return [k for k, m in zip(keys, mask, strict=True) if m]

    def best_key(self, state: SearchState) -> str | None:
        """Best feasible key by the first objective (earliest on ties)."""
        best, best_value = None, math.inf
        for k in state.archive:
            if self.violation(state, k) == 0:
                value = self.vector(state, k)[0]
                if best is None or value < best_value:
                    best, best_value = k, value
        return best

    def reference_point(self, state: SearchState) -> dict[str, float] | None:
        """The hypervolume reference in the objectives' own units (``state.reference`` is
        in minimisation space: maximised objectives negated)."""
        if state.reference is None:
            return None
        return {
            o.name: o.from_min(r) for o, r in zip(self.objectives, state.reference, strict=True)
        }

    # ---- proposal by rejection -----------------------------------------------------------
    def _needed(self) -> list[str]:
        return [o.name for o in self.objectives] + [c.name for c in self.constraints]

    def _pre(self, genome: Any, key: str) -> dict[str, float] | None:
        """pre_filter result: metrics ({} when it returned True), None when rejected."""
        if self.pre_filter is None:
            return {}
        if key not in self._pre_memo:  # the filter is a pure function of the genome
            out = self.pre_filter(genome)
            if isinstance(out, bool):
                self._pre_memo[key] = {} if out else None
            elif isinstance(out, Mapping):
                self._pre_memo[key] = _as_float_metrics(out, key, what="pre_filter")
            else:
                raise ValueError(
                    f"pre_filter returned {type(out).__name__} for {key}; "
                    "expected bool or a mapping of metric name -> number"
                )
        return self._pre_memo[key]

    def _propose(
        self,
        make: Callable[[], Any],
        origin: str,
        taken: Container[str] | None = None,
    ) -> Candidate:
        """Calls ``make()`` until a genome passes dedup, the pre_filter and the
        constraints it can check, at most ``settings.max_tries`` times (never forever).
        When ``taken`` is a mutable set the accepted key is added to it."""
        log = _RejectionLog(self.constraints)
        tries = self.settings.max_tries
        for _ in range(tries):
            genome = make()
            key = self.ops.key(genome)
            if taken is not None and key in taken:
                log.duplicates += 1
                continue
            pre = self._pre(genome, key)
            if pre is None:
                log.filtered += 1
                continue
            if log.accept(pre):
                if isinstance(taken, MutableSet):
                    taken.add(key)
                return Candidate(genome, key, origin, pre)
        raise UnsatisfiableConstraintError(log.message(origin, tries))

    def _sample_batch(
        self, state: SearchState, n: int, taken: Container[str] | None
    ) -> list[Candidate]:
        return [
            self._propose(lambda: self.ops.sample(state.rng), "sample", taken) for _ in range(n)
        ]

    # ---- reports ------------------------------------------------------------------------
    def _auto_reference(self, state: SearchState) -> tuple[float, ...] | None:
        keys = list(state.archive)
        feasible = [k for k in keys if self.violation(state, k) == 0]
        pts = np.array([self.vector(state, k) for k in (feasible or keys)], dtype=float)
        ref = []
        for col in pts.T:
            col = col[np.isfinite(col)]
            if col.size == 0:
                return None
            hi, lo = float(col.max()), float(col.min())
            ref.append(hi + (0.1 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 1.0))
        return tuple(ref)

    def _report(self, state: SearchState, *, asked: int, evaluated: int) -> GenerationReport:
        feasible = sum(1 for k in state.archive if self.violation(state, k) == 0)
        front = self.front_keys(state)
        hv = None
        if state.reference is not None:
            hv = (
                hypervolume([self.vector(state, k) for k in front], state.reference)
                if front
                else 0.0
            )
        best = self.best_key(state)
        return GenerationReport(
            generation=state.generation,
            asked=asked,
            evaluated=evaluated,
            cached=asked - evaluated,
            evaluations=state.evaluations,
            feasible=feasible,
            front_size=len(front),
            hypervolume=hv,
            best_key=best,
            best=None if best is None else dict(state.archive[best].metrics),
        )


def _as_float_metrics(metrics: Any, key: str, what: str = "evaluator") -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"{what} returned {type(metrics).__name__} for candidate {key}; "
            "expected a mapping of metric name -> number"
        )
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(
                f"{what}: metric {name!r} of candidate {key} is {value!r}, expected a number"
            )
        out[str(name)] = float(value)
    return out
