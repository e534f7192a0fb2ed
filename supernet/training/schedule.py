"""Learning-rate schedules as pure functions of the number of finished updates.

The learning rate of update ``u`` (1-based) is ``schedule.lr(u - 1)``, as in fairseq: the
first update runs at ``warmup_init_lr``. Because the rate depends on nothing but the update
count, resuming a run needs no scheduler state beyond the schedule's own settings (which the
checkpoint stores and checks).

- ``cosine`` (HAT / AutoMoE supernet and subnet recipe): linear warmup from
  ``warmup_init_lr`` to ``max_lr`` over ``warmup_updates``, then one half cosine period from
  ``max_lr`` down to ``min_lr`` ending at ``total_updates``; ``min_lr`` afterwards.
- ``inverse_sqrt`` (fairseq / "Attention is all you need"): the same warmup, then
  ``max_lr * sqrt(warmup_updates / n)``.
- ``constant``: the same warmup, then ``max_lr``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SCHEDULE_KINDS", "LRSchedule"]

SCHEDULE_KINDS = ("cosine", "inverse_sqrt", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """A warmup + decay learning-rate schedule (see module docstring).

    Attributes:
        kind: "cosine", "inverse_sqrt" or "constant".
        max_lr: peak learning rate, reached at the end of warmup.
        warmup_updates: length of the linear warmup (>= 1 for inverse_sqrt).
        warmup_init_lr: learning rate of the first update.
        min_lr: cosine's final learning rate.
        total_updates: cosine's end (warmup included); ignored by the other kinds.
    """

    kind: str = "cosine"
    max_lr: float = 1e-3
    warmup_updates: int = 0
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    total_updates: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"lr schedule {self.kind!r} is not one of {SCHEDULE_KINDS}")
        if not self.max_lr > 0:
            raise ValueError(f"max_lr must be > 0, got {self.max_lr}")
        if self.warmup_updates < 0 or self.warmup_init_lr < 0 or self.min_lr < 0:
            raise ValueError("warmup_updates, warmup_init_lr and min_lr must be >= 0, got "
                             f"{self.warmup_updates}, {self.warmup_init_lr}, {self.min_lr}")
        if self.kind == "inverse_sqrt" and self.warmup_updates < 1:
            raise ValueError("the inverse_sqrt schedule needs warmup_updates >= 1")
        if self.kind == "cosine" and self.total_updates <= self.warmup_updates:
            raise ValueError(f"cosine schedule: total_updates ({self.total_updates}) must exceed "
                             f"warmup_updates ({self.warmup_updates})")

    def lr(self, num_updates: int) -> float:
        """Learning rate after `num_updates` finished updates (so for update num_updates+1)."""
        n, w = num_updates, self.warmup_updates
        if n < w:
            return self.warmup_init_lr + n * (self.max_lr - self.warmup_init_lr) / w
        if self.kind == "constant":
            return self.max_lr
        if self.kind == "inverse_sqrt":
            return self.max_lr * math.sqrt(w / max(n, 1))
        t = (n - w) / (self.total_updates - w)
        if t >= 1.0:
            return self.min_lr
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRSchedule:
        return cls(kind=str(data["kind"]), max_lr=float(data["max_lr"]),
                   warmup_updates=int(data["warmup_updates"]),
                   warmup_init_lr=float(data["warmup_init_lr"]), min_lr=float(data["min_lr"]),
                   total_updates=int(data["total_updates"]))
