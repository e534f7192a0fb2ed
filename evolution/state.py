"""The full, serialisable state of a search between two generations.

Everything a search needs to continue lives here: the generation counter, the RNG state
(``random.Random.getstate()``), the current population (as keys), the evaluation archive
(which is also the cache: a key already in it is never evaluated again), one record per
candidate per generation, and the per-generation reports. `SearchState.to_json` gives
plain JSON data (genomes through the caller's ``encode``); restoring it and continuing
gives bit-for-bit the same search as never stopping.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ORIGINS",
    "Candidate",
    "Entry",
    "Record",
    "GenerationReport",
    "SearchState",
    "STATE_FORMAT",
]

STATE_FORMAT = "automoe.evolution.state/1"

# How a candidate came to be asked for: drawn from the space, a mutated parent, a crossover
# of two parents, or a parent carried into the next population (HAT's GA re-scores those;
# the cache makes that free).
ORIGINS = ("sample", "mutation", "crossover", "parent")


@dataclass(frozen=True)
class Candidate:
    """One genome an algorithm asks to have scored.

    ``pre_metrics`` are the cheap metrics the ``pre_filter`` returned while the candidate
    was proposed (e.g. FLOPs); they are merged into its metrics, the evaluator's win.
    """

    genome: Any
    key: str
    origin: str
    pre_metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One distinct evaluated genome (the cache): first generation and origin it had."""

    key: str
    genome: Any
    metrics: Mapping[str, float]
    generation: int
    origin: str


@dataclass(frozen=True)
class Record:
    """One candidate of one generation, with its metrics (``cached``: cost nothing)."""

    generation: int
    key: str
    origin: str
    cached: bool
    genome: Any
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class GenerationReport:
    """What one generation did, for progress bars and logs.

    ``hypervolume`` is that of the feasible front of everything evaluated so far, with
    respect to the state's reference point (minimisation space); ``best`` the metrics of
    the best feasible candidate by the first objective.
    """

    generation: int
    asked: int
    evaluated: int
    cached: int
    evaluations: int
    feasible: int
    front_size: int
    hypervolume: float | None
    best_key: str | None
    best: dict[str, float] | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SearchState:
    """Mutable search state; only `SearchAlgorithm` methods and `runner.step` change it."""

    rng: random.Random
    generation: int = 0
    population: list[str] = field(default_factory=list)
    archive: dict[str, Entry] = field(default_factory=dict)
    records: list[tuple[int, str, str, bool]] = field(default_factory=list)
    history: list[GenerationReport] = field(default_factory=list)
    reference: tuple[float, ...] | None = None

    @property
    def evaluations(self) -> int:
        """Distinct genomes evaluated so far (what the evaluator was actually asked)."""
        return len(self.archive)

    def iter_records(self) -> list[Record]:
        """Every (generation, candidate) with its genome and metrics, in order."""
        out = []
        for generation, key, origin, cached in self.records:
            entry = self.archive[key]
            out.append(Record(generation, key, origin, cached, entry.genome, entry.metrics))
        return out

    # ---- JSON ------------------------------------------------------------------------
    def to_json(self, encode: Callable[[Any], Any]) -> dict[str, Any]:
        version, internal, gauss_next = self.rng.getstate()
        return {
            "format": STATE_FORMAT,
            "generation": self.generation,
            "rng": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "population": list(self.population),
            "archive": [
                {
                    "key": e.key,
                    "genome": encode(e.genome),
                    "metrics": dict(e.metrics),
                    "generation": e.generation,
                    "origin": e.origin,
                }
                for e in self.archive.values()
            ],
            "records": [list(r) for r in self.records],
            "history": [h.to_json() for h in self.history],
            "reference": None if self.reference is None else list(self.reference),
        }

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        decode: Callable[[Any], Any],
        key: Callable[[Any], str],
        *,
        source: str = "search state",
    ) -> SearchState:
        """Rebuilds a state; raises ValueError naming the bad field."""
        if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"{source}: format {got!r}, expected {STATE_FORMAT!r}")
        try:
            rng_data = data["rng"]
            rng = random.Random()
            rng.setstate(
                (
                    int(rng_data["version"]),
                    tuple(int(x) for x in rng_data["state"]),
                    rng_data["gauss_next"],
                )
            )
            archive: dict[str, Entry] = {}
            for i, item in enumerate(data["archive"]):
                genome = decode(item["genome"])
                if key(genome) != item["key"]:
                    raise ValueError(
                        f"{source}: archive[{i}] key {item['key']!r} does not match its "
                        f"genome (key {key(genome)!r}); was it written by another space?"
                    )
                archive[item["key"]] = Entry(
                    item["key"],
                    genome,
                    {k: float(v) for k, v in item["metrics"].items()},
                    int(item["generation"]),
                    str(item["origin"]),
                )
            records = [(int(g), str(k), str(o), bool(c)) for g, k, o, c in data["records"]]
            population = [str(k) for k in data["population"]]
            history = [GenerationReport(**h) for h in data["history"]]
            reference = data["reference"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: malformed state ({type(err).__name__}: {err})") from None
        unknown = [r[1] for r in records if r[1] not in archive]
        unknown += [k for k in population if k not in archive]
        if unknown:
            raise ValueError(f"{source}: keys {unknown[:3]} are not in the archive")
        return cls(
            rng=rng,
            generation=int(data["generation"]),
            population=population,
            archive=archive,
            records=records,
            history=history,
            reference=None if reference is None else tuple(float(x) for x in reference),
        )
