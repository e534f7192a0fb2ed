"""`TrainConfig`: every setting of a training run that changes its result."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from search_spaces.checks import check_ints, check_known_fields
from supernet.training.sampling import SamplingRule
from supernet.training.schedule import LRSchedule

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (stored in the run dir and in every checkpoint).

    Attributes:
        max_updates: stop after this many updates (the only setting a resume may change).
        schedule: learning-rate schedule (its length is part of it, not max_updates).
        sampling: subnet sampling rule; None trains the model as it is (a standalone
            Transformer).
        seed: seeds subnet sampling, dropout (per update and pass) and probe subnets.
        update_freq: micro-batches per rank accumulated into one update; the global batch
            of an update is ``update_freq * world_size`` token-budget batches.
        label_smoothing: epsilon of the label-smoothed cross entropy.
        load_balance_coef, z_loss_coef: weights of the MoE auxiliary losses (per token).
        adam_betas, adam_eps, weight_decay: Adam (coupled L2 weight decay, as fairseq).
        clip_norm: clip the global gradient norm to this (0 = no clipping).
        validate_every: validate the probe subnets every this many updates, and after the
            last update if the run reached the schedule's planned length (a run stopped
            earlier is treated like an interrupted one, so its resume reproduces the log).
        save_every: write checkpoint_last.pt every this many updates (and at the end).
        keep_last: also keep this many model-only checkpoints checkpoint_<update>.pt
            (for averaging).
        bf16: bf16 autocast on CUDA (ignored on the CPU).
        cpu_bf16: bf16 autocast of the training passes on the CPU too (master weights,
            Adam and the loss stay fp32; validation stays fp32). Off by default: it pays
            only on CPUs with native bf16 matmuls (AVX-512 BF16 / AMX).
        distill_weight: in-place distillation under the sandwich rule (BigNAS / OFA): every
            subnet of an update but the largest learns from ``(1 - w) * label loss + w *
            KL(largest || subnet)``, the KL against the largest subnet's detached
            predictions on the same batch (the largest is trained first, from labels only).
            0 = plain sandwich; 1 = soft targets only (BigNAS).
        router_warmup: for the first this many updates every MoE layer routes each token
            to uniformly random experts and the routers do not train, so that every expert
            (of every size) has learnt from an even share of tokens before the routers
            start choosing (0 = off; supernets only).
    """

    max_updates: int
    schedule: LRSchedule
    sampling: SamplingRule | None = field(default_factory=SamplingRule)
    seed: int = 1
    update_freq: int = 1
    label_smoothing: float = 0.1
    load_balance_coef: float = 0.01
    z_loss_coef: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    validate_every: int = 0
    save_every: int = 0
    keep_last: int = 0
    bf16: bool = True
    cpu_bf16: bool = False
    distill_weight: float = 0.0
    router_warmup: int = 0

    def __post_init__(self) -> None:
        check_ints("TrainConfig", self, {"max_updates": 1, "update_freq": 1, "validate_every": 0,
                                         "save_every": 0, "keep_last": 0, "router_warmup": 0})
        for name in ("load_balance_coef", "z_loss_coef", "weight_decay", "clip_norm", "adam_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.distill_weight > 0 and (self.sampling is None or self.sampling.kind != "sandwich"):
            raise ValueError("distill_weight > 0 needs the sandwich sampling rule (its largest "
                             "subnet is the teacher)")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (LRSchedule, SamplingRule)):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<train config>") -> TrainConfig:
        check_known_fields(cls, data, source=source, what="training setting(s)")
        kwargs = dict(data)
        try:
            kwargs["schedule"] = LRSchedule.from_dict(data["schedule"])
            if data.get("sampling") is not None:
                kwargs["sampling"] = SamplingRule.from_dict(data["sampling"])
            if "adam_betas" in data:
                kwargs["adam_betas"] = tuple(float(b) for b in data["adam_betas"])
            return cls(**kwargs)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: bad training settings ({err})") from None

    def differences(self, other: TrainConfig, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """Names and values of settings that differ from `other` (for resume checks)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
