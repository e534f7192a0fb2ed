"""The axes a Pareto-front plot can draw, derived from the metric registry
(`automoe.metrics`): result-table column, label (unit and protocol), direction and scale.
Free of pandas and matplotlib, so that ``automoe plot --help`` and the ``--pairs`` check can
name them; `automoe.plots` draws them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from automoe.metrics import METRICS

__all__ = ["Axis", "axes", "axis_label"]


@dataclass(frozen=True)
class Axis:
    column: str
    label: str
    maximize: bool
    scale: float = 1.0
    protocol_name: str = ""  # the key of the axis's protocol in search.json's protocols
    protocol_unknown: str = ""
    protocol_says: str = ""
    title: str = ""


def axes() -> dict[str, Axis]:
    """Column -> `Axis`, for every registered metric a plot can draw."""
    return {m.column: Axis(m.column, m.axis.label, m.maximize, m.axis.scale, m.name,
                           m.axis.protocol_unknown, m.axis.protocol_says, m.title or m.column)
            for m in METRICS.values() if m.axis is not None}


def axis_label(axis: Axis, protocols: Mapping[str, str]) -> str:
    """The axis's label, its ``{protocol}`` filled from a run's ``protocols`` (units and
    protocols go on the axes: a number without its protocol is not comparable)."""
    text = protocols.get(axis.protocol_name, axis.protocol_unknown)
    if axis.protocol_says and axis.protocol_says not in text:
        text = f"{axis.protocol_says}, {text}"
    return axis.label.format(protocol=text)
