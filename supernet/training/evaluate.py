"""Dev-set loss of one subnet (or of a standalone model), summed over data-parallel ranks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from search_spaces.config import SubnetConfig
from supernet.training.distributed import DistInfo, all_reduce_sum
from supernet.training.loss import label_smoothed_nll

__all__ = ["EvalResult", "evaluate_loss", "forward", "autocast_for"]


@dataclass(frozen=True)
class EvalResult:
    """Per-token dev metrics (nats).

    Attributes:
        loss: label-smoothed loss per target token.
        nll: negative log-likelihood per target token.
        ntokens: labelled target tokens evaluated (all ranks).
    """

    loss: float
    nll: float
    ntokens: int

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nll, 700.0))


def forward(model: torch.nn.Module, src: torch.Tensor, prev: torch.Tensor,
            subnet: SubnetConfig | None) -> tuple[torch.Tensor, Any]:
    """``model(src, prev, subnet)`` for a supernet, ``model(src, prev)`` for a plain model."""
    if subnet is None:
        return model(src, prev)
    return model(src, prev, subnet)


def autocast_for(device: torch.device, bf16: bool, *,
                 cpu: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `bf16`; on the CPU only when `cpu` (it pays only where the
    CPU has native bf16 matmuls, docs/benchmarks.md "Quality per minute")."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if cpu and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: Iterable[Any], subnet: SubnetConfig | None,
                  *, label_smoothing: float, device: torch.device, bf16: bool = True,
                  info: DistInfo | None = None) -> EvalResult:
    """Loss of `subnet` over every batch of `batches` ((src, prev, target, ...) tuples);
    in data-parallel runs each rank passes its shard and the sums are all-reduced."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    loss_sum = nll_sum = 0.0
    ntok = 0
    try:
        for batch in batches:
            src, prev, target = (t.to(device) for t in batch[:3])
            with autocast_for(device, bf16):
                logits, _ = forward(model, src, prev, subnet)
            sums = label_smoothed_nll(logits, target, epsilon=label_smoothing)
            loss_sum += float(sums.loss)
            nll_sum += float(sums.nll)
            ntok += sums.ntokens
    finally:
        model.train(was_training)
    loss_sum, nll_sum, total = all_reduce_sum([loss_sum, nll_sum, ntok], info, device)
    if total == 0:
        raise ValueError("the validation batches hold no target tokens")
    return EvalResult(loss_sum / total, nll_sum / total, int(total))
