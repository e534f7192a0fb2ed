"""What a search can optimise or bound, and the CLI forms that name them.

A *metric* (`automoe.metrics`, the registry) is a column of the result tables (``bleu``,
``loss``, ``flops``, ``params``, ``weight_bytes``, ``latency_ms``,
``predicted_latency_ms``, ...); the user names it by a short name (``bleu``,
``latency``, ...). ``parse_objectives("bleu,flops,latency")`` gives `evolution.Objective`s
with each metric's natural direction, and ``parse_constraint("latency<=80ms")`` an
`evolution.Constraint` in the metric's own unit (ms, FLOPs, parameters, bytes). A metric's
kind (cheap, score, latency) decides where the search computes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from automoe.metrics import METRICS, Metric, get_metric
from evolution.objectives import Constraint, Objective

__all__ = [
    "Metric",
    "METRICS",
    "DEFAULT_OBJECTIVES",
    "get_metric",
    "parse_objectives",
    "parse_constraint",
    "parse_bound",
    "needed_metrics",
    "latency_metric",
    "searchable",
]


# Dev loss, not BLEU: on the same supernet it resolved more subnet pairs at a third of the
# CPU time (docs/benchmarks.md, "Search objectives"); HAT searched on loss too.
DEFAULT_OBJECTIVES = ("loss", "flops", "latency")

_BOUND_RE = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*([A-Za-z]*)\s*$")


def latency_metric(runtime: str) -> Metric:
    """The measured-latency metric of ``runtime`` ("torch": ``latency``, "onnxruntime":
    ``latency_ort``); ValueError for another runtime."""
    for metric in METRICS.values():
        if metric.kind == "latency" and metric.runtime == runtime:
            return metric
    raise ValueError(f"no latency metric measures runtime {runtime!r}")


def searchable(name: str, *, where: str) -> Metric:
    """`get_metric`, refusing a metric the search cannot compute (kind "report")."""
    metric = get_metric(name, where=where)
    if metric.kind == "report":
        can = sorted(m.name for m in METRICS.values() if m.kind != "report")
        raise ValueError(f"{where}: {name!r} is reported, not searched; expected one of {can}")
    return metric


def parse_objectives(text: str | Sequence[str]) -> tuple[Objective, ...]:
    """``"bleu,flops,latency"`` (or a list of names) -> objectives on table columns.

    A name may carry an explicit direction (``"loss:min"``); by default each metric's
    natural one is used (BLEU up, everything else down).
    """
    items = [s for s in (text.split(",") if isinstance(text, str) else text)]
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError(f"--objectives: empty ({text!r}); expected e.g. 'bleu,flops,latency'")
    out: list[Objective] = []
    for item in items:
        name, _, direction = item.partition(":")
        metric = searchable(name.strip(), where="--objectives")
        out.append(Objective(metric.column, direction.strip() or metric.direction))
    columns = [o.name for o in out]
    if len(set(columns)) != len(columns):
        raise ValueError(f"--objectives: {text!r} names a metric twice")
    return tuple(out)


def parse_constraint(text: str) -> Constraint:
    """``"latency<=80ms"``, ``"flops<=2e9"``, ``"flops<=2G"``, ``"bleu>=20"`` -> a
    `Constraint` on the metric's column, with the bound converted to the column's unit."""
    bound = parse_bound(text, flag="--constraint")
    searchable(bound.name, where=f"--constraint {text!r}")
    return bound


def parse_bound(text: str, *, flag: str) -> Constraint:
    """`parse_constraint` for any option that takes a bound (``--constraint``, export's
    ``--pick``); errors name `flag` and the text."""
    where = f"{flag} {text!r}"
    match = _BOUND_RE.match(text)
    if match is None:
        raise ValueError(f"{where}: expected NAME<=NUMBER[UNIT] or NAME>=NUMBER[UNIT], "
                         "e.g. 'latency<=80ms' or 'flops<=2e9'")
    name, op, number, unit = match.groups()
    metric = get_metric(name, where=where)
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{where}: {number!r} is not a number") from None
    if unit:
        factors = dict(metric.units)
        if unit not in factors:
            allowed = sorted(factors) or ["no unit"]
            raise ValueError(f"{where}: unit {unit!r} is not one of {allowed} "
                             f"for {metric.name}")
        value *= factors[unit]
    return Constraint(metric.column, op, value)


def needed_metrics(objectives: Iterable[Objective], constraints: Iterable[Constraint]
                   ) -> tuple[Metric, ...]:
    """Every metric the objectives and constraints read (objectives first, no repeats)."""
    seen: dict[str, Metric] = {}
    items: list[Objective | Constraint] = [*objectives, *constraints]
    for item in items:
        metric = get_metric(item.name)
        seen.setdefault(metric.column, metric)
    return tuple(seen.values())
