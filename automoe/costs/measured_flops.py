"""Measured FLOPs: count the matmuls a model really runs on one teacher-forced forward.

Two independent counters cross-check the analytic count (`automoe.costs.flops`):

- fvcore (``FlopCountAnalysis``, a jit trace; it counts one multiply-add as one "flop", so
  its total is MACs), with an extra handle for ``aten::scaled_dot_product_attention``,
  which fvcore skips;
- ``torch.utils.flop_counter.FlopCounterMode`` (eager dispatch; it counts 2 FLOPs per
  MAC), with a formula for ``aten._scaled_dot_product_flash_attention_for_cpu``, which it
  lacks; passed per call through ``custom_mapping``, so nothing global changes.

Both see the routing the input really takes, so on MoE models they count what executed.
The model's forward always includes the output projection; when the protocol excludes it
(the default) its ``batch·T·d_dec·V`` MACs are subtracted, the one matmul we remove.
Layer norms, softmax and elementwise ops are counted by neither the analytic count nor
these (fvcore's layer-norm handle is turned off), so the three agree by construction
of what they count, and any gap is a modelling error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from automoe.costs.flops import FlopsProtocol
from supernet.contracts import SubnetModel

__all__ = ["MeasuredFlops", "count_flops_fvcore", "count_flops_torch", "protocol_inputs"]

# fvcore's default handles that are not matmuls; FlopCounterMode has no formula for them.
_FVCORE_ZERO_OPS = ("aten::layer_norm", "aten::group_norm", "aten::batch_norm", "aten::instance_norm")


@dataclass(frozen=True)
class MeasuredFlops:
    """A counted forward pass. ``macs`` follows the protocol (output projection removed
    unless included); ``macs_raw`` is what the tool counted; ``flops = 2·macs``."""

    macs: float
    macs_raw: float
    output_projection_macs: float
    tool: str
    by_operator: dict[str, float]

    @property
    def flops(self) -> float:
        return 2.0 * self.macs


def protocol_inputs(protocol: FlopsProtocol, vocab_size: int, *, seed: int = 0,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(src [B, S], prev [B, T])``: random word ids (seeded generator), src ends with EOS,
    prev starts with BOS (HAT feeds a constant sentence; random ids give MoE routers real
    variety; the dense count does not depend on ids at all)."""
    from supernet.tokens import BOS_ID, EOS_ID

    gen = torch.Generator().manual_seed(seed)
    low = EOS_ID + 1
    src = torch.randint(low, vocab_size, (protocol.batch, protocol.src_len), generator=gen)
    prev = torch.randint(low, vocab_size, (protocol.batch, protocol.tgt_len), generator=gen)
    src[:, -1] = EOS_ID
    prev[:, 0] = BOS_ID
    return src.to(device), prev.to(device)


class _LogitsOnly(nn.Module):
    """``model(src, prev) -> (logits, aux)`` as a traceable module returning logits only
    (jit tracing needs tensor outputs; aux holds counts and losses, not matmuls)."""

    def __init__(self, model: SubnetModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        out = self.model(src, prev)
        return out[0] if isinstance(out, tuple) else out


def _output_projection_macs(protocol: FlopsProtocol, model: SubnetModel, vocab_size: int
                            ) -> float:
    if protocol.include_output_projection:
        return 0.0
    d_dec = model.config.decoder_embed_dim
    return float(protocol.batch * protocol.tgt_len * d_dec * vocab_size)


def _sdpa_fvcore_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``softmax(Q Kᵀ) V``: ``prod(batch dims)·Lq·Lk·(E + Ev)``."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _zero_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """Norm layers are not matmuls: counted as 0, like the analytic count does."""
    return 0


def count_flops_fvcore(model: SubnetModel, protocol: FlopsProtocol | None = None, *,
                       vocab_size: int, seed: int = 0) -> MeasuredFlops:
    """fvcore's count of one teacher-forced forward of ``model`` under ``protocol``.

    Args:
        model: a `supernet.contracts.SubnetModel` (``model(src, prev) -> (logits, aux)``,
            ``model.config``): an exported `Transformer` or a supernet's bound view.
        protocol: sizes (default HAT's); the output projection is removed unless included.
        vocab_size: the model's vocabulary (input ids are drawn below it).
        seed: seeds the input ids (MoE routing depends on them).
    """
    from fvcore.nn import FlopCountAnalysis

    p = protocol or FlopsProtocol()
    device = next(model.parameters()).device
    src, prev = protocol_inputs(p, vocab_size, seed=seed, device=device)
    wrapped = _LogitsOnly(model).eval()
    analysis = FlopCountAnalysis(wrapped, (src, prev))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_fvcore_handle)
    analysis.set_op_handle(**dict.fromkeys(_FVCORE_ZERO_OPS, _zero_handle))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fv_logger = logging.getLogger("fvcore.nn.jit_analysis")
    level = fv_logger.level
    fv_logger.setLevel(logging.ERROR)  # "unsupported operator aten::add" noise
    try:
        with torch.no_grad():
            raw = float(analysis.total())
            by_op = {k: float(v) for k, v in analysis.by_operator().items()}
    finally:
        fv_logger.setLevel(level)
    out = _output_projection_macs(p, model, vocab_size)
    return MeasuredFlops(macs=raw - out, macs_raw=raw, output_projection_macs=out,
                         tool="fvcore", by_operator=by_op)


def _sdpa_cpu_formula(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops_torch(model: SubnetModel, protocol: FlopsProtocol | None = None, *,
                      vocab_size: int, seed: int = 0) -> MeasuredFlops:
    """``FlopCounterMode``'s count (converted to MACs) of one teacher-forced forward."""
    from torch.utils.flop_counter import FlopCounterMode

    p = protocol or FlopsProtocol()
    device = next(model.parameters()).device
    src, prev = protocol_inputs(p, vocab_size, seed=seed, device=device)
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _sdpa_cpu_formula
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    try:
        with torch.no_grad(), counter:
            model(src, prev)
    finally:
        model.train(was_training)
    by_op = {str(k): v / 2.0 for k, v in counter.get_flop_counts().get("Global", {}).items()}
    raw = counter.get_total_flops() / 2.0
    out = _output_projection_macs(p, model, vocab_size)
    return MeasuredFlops(macs=raw - out, macs_raw=raw, output_projection_macs=out,
                         tool="torch.utils.flop_counter", by_operator=by_op)
