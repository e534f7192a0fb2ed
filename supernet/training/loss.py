"""Label-smoothed cross entropy (fairseq's criterion), summed over non-padding tokens.

The loss of a token with log-probabilities ``lp`` over ``V`` classes and label ``y`` is
``(1 - eps) * -lp[y] + eps / V * sum_v -lp[v]``: the cross entropy against the target
distribution that puts ``1 - eps + eps/V`` on ``y`` and ``eps/V`` elsewhere (PyTorch's
``cross_entropy(label_smoothing=eps)`` uses the same definition). Sums, not means, are
returned so the training loop can normalise by the token count of the whole update
(all accumulation steps and all ranks), which makes data-parallel training equal to one
process with the same global batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from supernet.tokens import PAD_ID

__all__ = ["LossSums", "label_smoothed_nll", "token_losses", "distillation_kl"]


class LossSums(NamedTuple):
    """Sums over the labelled tokens of a batch.

    Attributes:
        loss: scalar tensor, label-smoothed loss (differentiable).
        nll: scalar tensor, plain negative log-likelihood in nats (detached).
        ntokens: number of non-padding labels.
    """

    loss: torch.Tensor
    nll: torch.Tensor
    ntokens: int


def _token_terms(logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(nll [B, T], smoothing term [B, T] or None when epsilon is 0, padding mask [B, T]),
    zero at padding, from one fp32 log-softmax of `logits` [B, T, V]."""
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {epsilon}")
    lprobs = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    pad = target.eq(ignore_index)  # [B, T]
    nll = -lprobs.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [B, T]
    nll = nll.masked_fill(pad, 0.0)
    smooth = -lprobs.sum(-1).masked_fill(pad, 0.0) if epsilon > 0 else None  # [B, T]
    return nll, smooth, pad


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, *, epsilon: float,
                       ignore_index: int = PAD_ID) -> LossSums:
    """Label-smoothed loss of `logits` [B, T, V] against `target` [B, T] (computed in fp32).

    Positions where ``target == ignore_index`` contribute nothing.
    """
    nll, smooth, pad = _token_terms(logits, target, epsilon, ignore_index)
    if smooth is not None:
        loss = (1.0 - epsilon) * nll.sum() + (epsilon / logits.size(-1)) * smooth.sum()
    else:
        loss = nll.sum()
    return LossSums(loss, nll.sum().detach(), int(target.numel() - int(pad.sum())))


def token_losses(logits: torch.Tensor, target: torch.Tensor, *, epsilon: float,
                 ignore_index: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (label-smoothed loss, NLL), each [B, T] and zero at padding: the terms
    whose sums `label_smoothed_nll` returns (per-sentence scores sum them over T)."""
    nll, smooth, _ = _token_terms(logits, target, epsilon, ignore_index)
    if smooth is None:
        return nll, nll
    return (1.0 - epsilon) * nll + (epsilon / logits.size(-1)) * smooth, nll


def distillation_kl(logits: torch.Tensor, teacher_lprobs: torch.Tensor, target: torch.Tensor, *,
                    ignore_index: int = PAD_ID) -> torch.Tensor:
    """Summed ``KL(teacher || student)`` over the labelled tokens (in-place distillation).

    Args:
        logits: the student's logits [B, T, V] (any float dtype; computed in fp32).
        teacher_lprobs: the teacher's log-probabilities [B, T, V] (fp32, no gradient).
        target: labels [B, T]; only positions where ``target != ignore_index`` count.

    Returns: a scalar tensor, ``sum_t sum_v p_t(v) (log p_t(v) - log p_s(v))``, differentiable
    in `logits`. Its gradient equals that of the soft-target cross entropy (the teacher's
    entropy is a constant); the KL is reported because it is 0 when the two agree.
    """
    if logits.shape != teacher_lprobs.shape or logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, teacher {tuple(teacher_lprobs.shape)} "
                         f"and target {tuple(target.shape)} do not match")
    lprobs = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    teacher = teacher_lprobs.detach()
    kl = (teacher.exp() * (teacher - lprobs)).sum(-1)  # [B, T]
    return kl.masked_fill(target.eq(ignore_index), 0.0).sum()
