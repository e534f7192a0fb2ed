"""The metric registry: every number a run's tables hold about a subnet, in one place.

A `Metric` says what a column is (name on the command line, table column, direction, unit
suffixes, description), how much it costs to get (``kind``), how a cheap one is computed
and which protocol it follows, where it goes in the tables and how a plot draws it. The
search's objectives and constraints (`automoe.search.objectives`), its cheap costs
(`automoe.search.scoring.CheapCosts`), the column order of ``candidates.csv`` and the plot
axes (`automoe.plot_axes`) all read this registry, so a new objective is one `register`
call (`registered` for a test).

Kinds:

- ``cheap``: a pure function of the config (FLOPs, params, bytes, predicted latency),
  computed in the search's driver by ``cost``; bounds on it reject candidates before any
  scoring;
- ``score``: needs the supernet and the dev set (dev loss, BLEU; `automoe.dev_scoring`);
- ``latency``: a measurement that owns its device (``runtime``: torch or ONNX Runtime);
- ``report``: a column the tables carry but a search cannot optimise (chrF, NLL, the
  retrained BLEU).

Torch-, pandas- and matplotlib-free, so the command line and ``automoe plot --help`` read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from automoe.costs.flops import FlopsProtocol, flops
from automoe.costs.report import BYTES_PROTOCOL
from search_spaces.config import SubnetConfig
from supernet.params import count_params, weight_bytes

if TYPE_CHECKING:
    from automoe.costs.predictor import LatencyPredictor
    from search_spaces.space import SearchSpace

__all__ = ["Metric", "AxisStyle", "CostContext", "METRICS", "KINDS", "register",
           "registered", "get_metric", "by_column", "table_order", "cheap_metrics"]

KINDS = ("cheap", "score", "latency", "report")


class CostContext(Protocol):
    """What a cheap metric's ``cost`` and ``protocol`` read (`CheapCosts` is one)."""

    vocab_size: int
    normalize_before: bool
    flops_protocol: FlopsProtocol
    space: SearchSpace
    predictor: LatencyPredictor | None
    predictor_path: str | None


@dataclass(frozen=True)
class AxisStyle:
    """How a plot draws a metric: ``label`` (``{protocol}`` is filled from the run's
    protocols, else ``protocol_unknown``; prefixed with ``protocol_says`` when the recorded
    text lacks it) and the factor from the column's unit to the axis's."""

    label: str
    scale: float = 1.0
    protocol_unknown: str = "protocol not recorded"
    protocol_says: str = ""


@dataclass(frozen=True)
class Metric:
    """One metric of the tables.

    Attributes:
        name: the command line's name (``--objectives``, ``--constraint``, ``--pick``).
        column: its column in ``candidates.csv`` (and the plot's axis name).
        direction: "max" or "min" (its natural objective direction).
        kind: one of `KINDS`.
        description: one line for ``search.json`` and the docs.
        units: accepted bound suffixes -> factor to the column's unit.
        runtime: kind "latency": the runtime measured (`LatencyProtocol.runtime`).
        cost: kind "cheap": ``(context, config) -> value`` (None: not available, e.g. a
            predicted latency without a predictor).
        protocol: ``context -> text`` of the protocol a cheap value follows (for
            ``search.json``'s ``protocols``); None: none to state.
        axis: how plots draw it; None: never on an axis.
        title: the short name in a plot's title.
    """

    name: str
    column: str
    direction: str
    kind: str
    description: str
    units: tuple[tuple[str, float], ...] = ()
    runtime: str | None = None
    cost: Callable[[CostContext, SubnetConfig], float | None] | None = None
    protocol: Callable[[CostContext], str | None] | None = None
    axis: AxisStyle | None = None
    title: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r}, expected "
                             "'max' or 'min'")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind {self.kind!r}, expected one of "
                             f"{KINDS}")
        if (self.kind == "cheap") != (self.cost is not None):
            raise ValueError(f"metric {self.name!r}: a cheap metric (and only one) has a cost")

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    @property
    def is_cost(self) -> bool:
        """True for what a subnet costs (cheap metrics, latency), False for its quality."""
        return self.kind in ("cheap", "latency")


_SI = (("k", 1e3), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12))
_BYTES = (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9))  # decimal, as the SI suffixes
_TIME = (("ms", 1.0), ("s", 1e3), ("us", 1e-3))
_PARAMS_PROTOCOL = "HAT convention: all parameters except the embedding table / tied output " \
                   "projection"
_LATENCY_UNKNOWN = "device in search.json"


def _params(c: CostContext, config: SubnetConfig) -> float:
    return float(count_params(config, c.vocab_size, normalize_before=c.normalize_before).hat)


def _params_active(c: CostContext, config: SubnetConfig) -> float:
    counts = count_params(config, c.vocab_size, normalize_before=c.normalize_before)
    return float(counts.active - counts.embedding)


def _bytes(c: CostContext, config: SubnetConfig) -> float:
    return float(weight_bytes(config, c.vocab_size, normalize_before=c.normalize_before).weights)


def _predicted(c: CostContext, config: SubnetConfig) -> float | None:
    if c.predictor is None:
        return None
    return float(c.predictor.predict([config], c.space)[0])


def _predictor_protocol(c: CostContext) -> str | None:
    return None if c.predictor is None else f"predictor {c.predictor_path} ({c.predictor.kind})"


# In table order: a run's objectives first, then these, then any other column alphabetically.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("bleu", "bleu", "max", "score",
           "sacreBLEU of the supernet's inherited weights on the fixed dev subset",
           axis=AxisStyle("BLEU (sacreBLEU, inherited weights, dev set; bars: 95% bootstrap "
                          "interval)"), title="BLEU"),
    Metric("chrf", "chrf", "max", "report",
           "chrF of the supernet's inherited weights on the fixed dev subset",
           axis=AxisStyle("chrF (sacreBLEU, inherited weights, dev set; bars: 95% bootstrap "
                          "interval)"), title="chrF"),
    Metric("loss", "loss", "min", "score",
           "dev cross-entropy per target token (nats), inherited weights, dropout off",
           axis=AxisStyle("dev loss (label-smoothed CE per token, inherited weights; bars: "
                          "±1.96 SE over sentences)"), title="dev loss"),
    Metric("nll", "nll", "min", "report",
           "dev negative log-likelihood per target token (nats, no label smoothing)"),
    Metric("flops", "flops", "min", "cheap",
           "analytic FLOPs (2×MACs) under the FLOPs protocol", _SI,
           cost=lambda c, config: float(flops(config, c.flops_protocol).flops),
           protocol=lambda c: c.flops_protocol.describe(),
           axis=AxisStyle("GFLOPs ({protocol})", 1e-9, "HAT protocol", "2×MACs"),
           title="GFLOPs"),
    Metric("params", "params", "min", "cheap",
           "parameters the subnet uses, excl. embeddings and output projection", _SI,
           cost=_params, protocol=lambda c: _PARAMS_PROTOCOL,
           axis=AxisStyle("params (M, excl. embeddings & output layer)", 1e-6), title="params"),
    Metric("bytes", "weight_bytes", "min", "cheap",
           "bytes of the subnet's parameters at their precision (experts at their bits, "
           "with per-channel scales), excl. embeddings and output projection", _BYTES,
           cost=_bytes, protocol=lambda c: BYTES_PROTOCOL,
           axis=AxisStyle("weight bytes (MB at each expert's precision, excl. embeddings & "
                          "output layer)", 1e-6), title="weight MB"),
    Metric("latency", "latency_ms", "min", "latency",
           "measured latency (ms, median) under the latency protocol, in torch", _TIME,
           runtime="torch",
           axis=AxisStyle("latency (ms, median; bars: p10-p90, {protocol})",
                          protocol_unknown=_LATENCY_UNKNOWN), title="latency"),
    Metric("latency_ort", "latency_ort_ms", "min", "latency",
           "measured latency (ms, median) under the latency protocol, of the subnet "
           "exported to ONNX and run in ONNX Runtime (CPU)", _TIME, runtime="onnxruntime",
           axis=AxisStyle("ONNX Runtime latency (ms, median; bars: p10-p90, {protocol})",
                          protocol_unknown=_LATENCY_UNKNOWN), title="ONNX Runtime latency"),
    Metric("predicted_latency", "predicted_latency_ms", "min", "cheap",
           "latency (ms) predicted by a fitted latency predictor (--predictor)", _TIME,
           cost=_predicted, protocol=_predictor_protocol,
           axis=AxisStyle("predicted latency (ms, {protocol})",
                          protocol_unknown="latency predictor"), title="predicted latency"),
    Metric("experts", "max_experts", "min", "cheap",
           "most experts in any layer (1 = a dense subnet: --constraint experts<=1 "
           "searches dense subnets only)",
           cost=lambda c, config: float(max(config.encoder_experts + config.decoder_experts)),
           axis=AxisStyle("most experts in a layer"), title="experts"),
    Metric("params_active", "params_active", "min", "cheap",
           "parameters one token passes through (top-k experts), excl. embeddings", _SI,
           cost=_params_active,
           axis=AxisStyle("active params (M per token, excl. embeddings)", 1e-6),
           title="active params"),
    Metric("bleu_retrained", "bleu_retrained", "max", "report",
           "sacreBLEU of the subnet retrained from scratch (`automoe retrain`), test set",
           axis=AxisStyle("BLEU (sacreBLEU, retrained, test)"), title="retrained BLEU"),
)}


def register(metric: Metric) -> None:
    """Adds ``metric`` to the registry (ValueError when its name or column is taken)."""
    taken = {m.name for m in METRICS.values()} | {m.column for m in METRICS.values()}
    if metric.name in taken or metric.column in taken:
        raise ValueError(f"metric {metric.name!r} (column {metric.column!r}): name or column "
                         "already registered")
    METRICS[metric.name] = metric


@contextlib.contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """`register` for the duration of a ``with`` block."""
    register(metric)
    try:
        yield metric
    finally:
        METRICS.pop(metric.name, None)


def by_column(column: str) -> Metric | None:
    return next((m for m in METRICS.values() if m.column == column), None)


def get_metric(name: str, *, where: str = "metric") -> Metric:
    """The metric called ``name`` (command-line name or column); ValueError listing the
    valid ones."""
    metric = METRICS.get(name) or by_column(name)
    if metric is None:
        raise ValueError(f"{where}: unknown metric {name!r}; expected one of {sorted(METRICS)}")
    return metric


def table_order() -> tuple[str, ...]:
    """The registry's columns in table order."""
    return tuple(m.column for m in METRICS.values())


def cheap_metrics() -> tuple[Metric, ...]:
    return tuple(m for m in METRICS.values() if m.kind == "cheap")
