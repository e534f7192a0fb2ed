"""Cost models: analytic FLOPs and parameters, measured FLOPs, latency measurement with a
device fingerprint and a cache, latency datasets and predictors.

Every number these modules produce carries its protocol (see docs/protocols.md).
"""

from automoe.costs.flops import FlopsProtocol, FlopsReport, RoutingCounts, flops
from automoe.costs.metrics import kendall_tau, mape, rmse
from automoe.costs.predictor import LatencyPredictor, PredictorConfig, fit_predictor

__all__ = [
    "FlopsProtocol",
    "FlopsReport",
    "RoutingCounts",
    "flops",
    "kendall_tau",
    "mape",
    "rmse",
    "LatencyPredictor",
    "PredictorConfig",
    "fit_predictor",
]
