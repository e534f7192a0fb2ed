"""Objectives and constraints: named metrics with a direction or a bound.

Metrics travel as plain ``dict[str, float]`` (what an evaluator returns). An `Objective`
says which way a metric is better; internally every algorithm works on *minimisation*
vectors (a maximised metric is negated), so the Pareto utilities have one convention.
A `Constraint` is a hard bound on one metric; its *violation* is 0 when met and otherwise
the excess relative to the bound, so constraints on metrics of very different scales
(FLOPs ~1e9, latency ~1e2 ms) can be summed for Deb's constraint domination.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Objective",
    "Constraint",
    "minimization_vector",
    "total_violation",
    "require_metrics",
]

_DIRECTIONS = {"min": "min", "minimize": "min", "max": "max", "maximize": "max"}


@dataclass(frozen=True)
class Objective:
    """One metric to optimise: ``Objective("bleu", "max")``, ``Objective("flops", "min")``.

    ``direction`` accepts "min"/"minimize"/"max"/"maximize" and is stored as "min"/"max".
    """

    name: str
    direction: str = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"objective name must be a non-empty string, got {self.name!r}")
        direction = _DIRECTIONS.get(str(self.direction).lower())
        if direction is None:
            raise ValueError(
                f"objective '{self.name}': direction {self.direction!r} must be one of "
                f"{sorted(_DIRECTIONS)}"
            )
        object.__setattr__(self, "direction", direction)

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    def to_min(self, value: float) -> float:
        """The value in minimisation space (negated when maximised); NaN becomes +inf,
        the worst possible value, so a failed evaluation never looks good."""
        value = float(value)
        if math.isnan(value):
            return math.inf
        return -value if self.maximize else value

    def from_min(self, value: float) -> float:
        return -value if self.maximize else value

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction}


@dataclass(frozen=True)
class Constraint:
    """A hard bound on one metric: ``Constraint("flops", "<=", 2e9)``."""

    name: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"constraint name must be a non-empty string, got {self.name!r}")
        if self.op not in ("<=", ">="):
            raise ValueError(f"constraint '{self.name}': op {self.op!r} must be '<=' or '>='")
        try:
            bound = float(self.bound)
        except (TypeError, ValueError):
            raise ValueError(
                f"constraint '{self.name}': bound {self.bound!r} is not a number"
            ) from None
        if not math.isfinite(bound):
            raise ValueError(f"constraint '{self.name}': bound must be finite, got {bound}")
        object.__setattr__(self, "bound", bound)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"

    def satisfied(self, value: float) -> bool:
        return self.violation(value) == 0.0

    def violation(self, value: float) -> float:
        """0 when met; else the excess over the bound, relative to |bound| (absolute when
        the bound is 0). NaN counts as infinitely violating."""
        value = float(value)
        if math.isnan(value):
            return math.inf
        excess = value - self.bound if self.op == "<=" else self.bound - value
        if excess <= 0:
            return 0.0
        return excess / abs(self.bound) if self.bound != 0 else excess

    def better(self, a: float, b: float) -> bool:
        """True when value a is closer to satisfying this constraint than b."""
        return a < b if self.op == "<=" else a > b

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "op": self.op, "bound": self.bound}


def require_metrics(metrics: Mapping[str, float], names: Sequence[str], *, where: str) -> None:
    """Raises ValueError when a metric the search needs is missing."""
    missing = [n for n in names if n not in metrics]
    if missing:
        raise ValueError(
            f"{where}: metrics lack {missing} (needed by the objectives/constraints); "
            f"got keys {sorted(metrics)}"
        )


def minimization_vector(
    metrics: Mapping[str, float], objectives: Sequence[Objective]
) -> tuple[float, ...]:
    """The objective values in minimisation space, in `objectives` order."""
    return tuple(o.to_min(metrics[o.name]) for o in objectives)


def total_violation(metrics: Mapping[str, float], constraints: Sequence[Constraint]) -> float:
    """Sum of relative violations (0.0 means feasible)."""
    return float(sum(c.violation(metrics[c.name]) for c in constraints))
