"""The axes a Pareto-front plot can draw: result-table column, label (unit and protocol),
direction and scale. A module of its own, free of pandas and matplotlib, so that ``automoe
plot --help`` and the ``--pairs`` check can name them; `automoe.plots` draws them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Axis", "AXES"]


@dataclass(frozen=True)
class Axis:
    column: str
    label: str
    maximize: bool
    scale: float = 1.0


# Units and protocols go on the axes: a number without its protocol is not comparable.
AXES: dict[str, Axis] = {
    "bleu": Axis("bleu", "BLEU (sacreBLEU, inherited weights, dev set; bars: 95% bootstrap "
                         "interval)", True),
    "bleu_retrained": Axis("bleu_retrained", "BLEU (sacreBLEU, retrained, test)", True),
    "loss": Axis("loss", "dev loss (label-smoothed CE per token, inherited weights; bars: "
                         "±1.96 SE over sentences)", False),
    "flops": Axis("flops", "GFLOPs ({flops_protocol})", False, 1e-9),
    "latency_ms": Axis("latency_ms", "latency (ms, median; bars: p10-p90, "
                                     "{latency_protocol})", False),
    "latency_ort_ms": Axis("latency_ort_ms", "ONNX Runtime latency (ms, median; bars: p10-p90, "
                                             "{latency_ort_protocol})", False),
    "params": Axis("params", "params (M, excl. embeddings & output layer)", False, 1e-6),
}
