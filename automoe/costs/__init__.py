"""Cost models: analytic FLOPs, measured FLOPs, latency measurement with a device
fingerprint and a cache, latency datasets and predictors.

Every number these modules produce carries its protocol (see docs/protocols.md). Names are
imported lazily, so torch-free parts (analytic FLOPs, metrics) load without torch.
"""

from __future__ import annotations

from typing import Any

from search_spaces.lazy import lazy_attribute

_EXPORTS = {
    "FlopsProtocol": "flops",
    "FlopsReport": "flops",
    "RoutingCounts": "flops",
    "flops": "flops",
    "MeasuredFlops": "measured_flops",
    "count_flops_fvcore": "measured_flops",
    "count_flops_torch": "measured_flops",
    "LatencyProtocol": "latency",
    "LatencyResult": "latency",
    "measure_latency": "latency",
    "device_fingerprint": "latency",
    "LatencyCache": "latency_cache",
    "measure_subnet": "subnet_latency",
    "collect_latency_dataset": "dataset",
    "read_latency_dataset": "dataset",
    "LatencyPredictor": "predictor",
    "PredictorConfig": "predictor",
    "fit_predictor": "predictor",
    "cost_report": "report",
    "kendall_tau": "metrics",
    "mape": "metrics",
    "rmse": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)
