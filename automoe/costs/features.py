"""Latency-predictor features: the space's architecture features plus the analytic FLOPs
breakdown (MACs per component under the default FLOPs protocol).

`SearchSpace.features` gives HAT's 10 averaged features, AutoMoE's expert means and per-layer
values; on a few hundred measured subnets those ~90 numbers alone overfit, while the seven
MAC counts summarise them the way the hardware sees them (measured on the `demo` space: a
linear fit's cross-validated MAPE drops from about 9 % to 7 %, see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from automoe.costs.flops import FLOPS_COMPONENTS, flops

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig
    from search_spaces.space import SearchSpace

__all__ = ["FLOPS_COMPONENTS", "latency_feature_names", "latency_features"]

def latency_feature_names(space: SearchSpace) -> list[str]:
    """Names of `latency_features` for ``space`` (fixed per space)."""
    return list(space.feature_names()) + [f"macs_{c}" for c in FLOPS_COMPONENTS]


def latency_features(space: SearchSpace, config: SubnetConfig) -> list[float]:
    """``space.features(config)`` followed by the MACs of each FLOPs component (uniform
    routing, batch 1, 30 + 30 tokens)."""
    breakdown = flops(config).breakdown
    return list(space.features(config)) + [float(breakdown[c]) for c in FLOPS_COMPONENTS]
