"""What a search can optimise or bound, and the CLI forms that name them.

A *metric* is a column of the result tables (``bleu``, ``loss``, ``flops``, ``params``,
``weight_bytes``, ``latency_ms``, ``predicted_latency_ms``); the user names it by a short name (``bleu``,
``latency``, ...). ``parse_objectives("bleu,flops,latency")`` gives `evolution.Objective`s
with each metric's natural direction, and ``parse_constraint("latency<=80ms")`` an
`evolution.Constraint` in the metric's own unit (ms, FLOPs, parameters, bytes).

Metrics differ in cost, which decides where they are computed:

- ``cheap`` (FLOPs, params, bytes, predicted latency): pure functions of the config, computed in
  the driver while proposing, so constraints on them reject candidates before any scoring;
- ``score`` (dev loss, BLEU): need the supernet and the dev subset (the actor pool);
- ``latency``: a measurement that owns its device (the evaluator's latency phase):
  ``latency`` in torch, ``latency_ort`` in ONNX Runtime (the subnet exported to ONNX); a
  search may use both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
]


@dataclass(frozen=True)
class Metric:
    """One user-facing metric: CLI name, table column, direction, unit and cost class."""

    name: str
    column: str
    direction: str
    kind: str  # "cheap", "score" or "latency"
    description: str
    units: tuple[tuple[str, float], ...] = ()  # accepted bound suffixes -> factor
    runtime: str | None = None  # kind "latency": the runtime measured (`LatencyProtocol.runtime`)


_SI = (("k", 1e3), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12))
_BYTES = (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9))  # decimal, as the SI suffixes
_TIME = (("ms", 1.0), ("s", 1e3), ("us", 1e-3))

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("bleu", "bleu", "max", "score",
               "sacreBLEU of the supernet's inherited weights on the fixed dev subset"),
        Metric("loss", "loss", "min", "score",
               "dev cross-entropy per target token (nats), inherited weights, dropout off"),
        Metric("flops", "flops", "min", "cheap",
               "analytic FLOPs (2×MACs) under the FLOPs protocol", _SI),
        Metric("params", "params", "min", "cheap",
               "parameters the subnet uses, excl. embeddings and output projection", _SI),
        Metric("bytes", "weight_bytes", "min", "cheap",
               "bytes of the subnet's parameters at their precision (experts at their bits, "
               "with per-channel scales), excl. embeddings and output projection", _BYTES),
        Metric("latency", "latency_ms", "min", "latency",
               "measured latency (ms, median) under the latency protocol, in torch", _TIME,
               runtime="torch"),
        Metric("latency_ort", "latency_ort_ms", "min", "latency",
               "measured latency (ms, median) under the latency protocol, of the subnet "
               "exported to ONNX and run in ONNX Runtime (CPU)", _TIME, runtime="onnxruntime"),
        Metric("experts", "max_experts", "min", "cheap",
               "most experts in any layer (1 = a dense subnet: --constraint experts<=1 "
               "searches dense subnets only)"),
        Metric("predicted_latency", "predicted_latency_ms", "min", "cheap",
               "latency (ms) predicted by a fitted latency predictor (--predictor)", _TIME),
    )
}
_BY_COLUMN = {m.column: m for m in METRICS.values()}

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


def get_metric(name: str, *, where: str = "metric") -> Metric:
    """The metric called ``name`` (CLI name or column); ValueError listing the valid ones."""
    metric = METRICS.get(name) or _BY_COLUMN.get(name)
    if metric is None:
        raise ValueError(f"{where}: unknown metric {name!r}; expected one of {sorted(METRICS)}")
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
        metric = get_metric(name.strip(), where="--objectives")
        out.append(Objective(metric.column, direction.strip() or metric.direction))
    columns = [o.name for o in out]
    if len(set(columns)) != len(columns):
        raise ValueError(f"--objectives: {text!r} names a metric twice")
    return tuple(out)


def parse_constraint(text: str) -> Constraint:
    """``"latency<=80ms"``, ``"flops<=2e9"``, ``"flops<=2G"``, ``"bleu>=20"`` -> a
    `Constraint` on the metric's column, with the bound converted to the column's unit."""
    return parse_bound(text, flag="--constraint")


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
