"""The cost report of one subnet (``automoe cost``): analytic parameter counts, bytes and
FLOPs, each with its protocol. Torch-free: all are functions of the `SubnetConfig`."""

from __future__ import annotations

from typing import Any

from automoe.costs.flops import FlopsProtocol, flops
from search_spaces.config import SubnetConfig
from supernet.params import count_params, weight_bytes
from supernet.tokens import DEFAULT_VOCAB_SIZE

__all__ = ["cost_report", "BYTES_PROTOCOL", "DEFAULT_VOCAB_SIZE", "PARAMS_PROTOCOL"]

PARAMS_PROTOCOL = (
    "total: every parameter incl. the shared embedding table (output projection tied, "
    "sinusoidal positions) and, in a pre-LN model, each stack's final layer norm; active: "
    "expected per token under uniform routing (top-k of n experts); hat: total without the "
    "embedding table / output projection (HAT convention), routers included"
)

BYTES_PROTOCOL = (
    "weight_bytes: every parameter except the embedding table, fp32 (4 bytes) except expert "
    "weight matrices below 32 bits: rows packed at their bits plus one fp32 scale per output "
    "channel (expert biases fp32); embedding_bytes: the embedding table (tied output "
    "projection), fp32"
)


def cost_report(config: SubnetConfig, protocol: FlopsProtocol, vocab_size: int, *,
                normalize_before: bool = False) -> dict[str, Any]:
    """The JSON object `automoe cost --json` prints: `supernet.params.count_params` and
    `supernet.params.weight_bytes` (of a pre-LN model when ``normalize_before``) and
    `automoe.costs.flops.flops` under ``protocol``."""
    params = count_params(config, vocab_size, normalize_before=normalize_before)
    size = weight_bytes(config, vocab_size, normalize_before=normalize_before)
    report = flops(config, protocol)
    return {
        "key": config.key(),
        "params_total": params.total,
        "params_active": params.active,
        "params_hat": params.hat,
        "weight_bytes": size.weights,
        "embedding_bytes": size.embedding,
        "macs": report.macs,
        "flops": report.flops,
        "macs_min": report.macs_min,
        "macs_max": report.macs_max,
        "routing": report.routing,
        "breakdown_macs": report.breakdown,
        "vocab_size": vocab_size,
        "normalize_before": normalize_before,
        "protocol": protocol.describe(),
        "protocol_settings": protocol.to_dict(),
        "params_protocol": PARAMS_PROTOCOL,
        "bytes_protocol": BYTES_PROTOCOL,
    }
