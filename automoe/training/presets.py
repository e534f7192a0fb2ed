"""Training presets and the flat option set that both training commands share.

`TrainOptions` is every knob of ``automoe supernet train`` / ``automoe train`` in one flat,
frozen record: a preset fills it, command-line options override single fields, and the
resolved record is stored in the run dir (``run.json``) so ``--resume`` can rebuild the run
exactly. Presets:

- ``demo``: minutes on 2 CPU cores (a few hundred updates of ~2k tokens), pre-LN; the
  supernet's peak learning rate is 2e-3 (measured: docs/benchmarks.md, "Quality per
  minute").
- ``wmt``: the WMT recipe of AutoMoE and HAT (``supertransformer/space0.yml`` and
  ``subtransformer/common.yml`` in microsoft/AutoMoE and
  mit-han-lab/hardware-aware-transformers): Adam (0.9, 0.98), 4096-token batches x 128 per
  update (~524k tokens; split over the ranks by accumulation), cosine schedule with linear
  warmup from 1e-7 to 1e-3, label smoothing 0.1, dropout 0.3, attention dropout 0.1, no
  clipping, 40k updates; warmup 10k for the supernet, 4k when retraining a subnet.
  Deviation: a load-balancing coefficient of 0.01 (Switch), where AutoMoE's own pipeline
  trains with 0 (its balancing term breaks with more than 2 experts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from search_spaces.checks import check_known_fields
from supernet.options import ModelOptions
from supernet.training.config import TrainConfig
from supernet.training.sampling import SamplingRule
from supernet.training.schedule import LRSchedule

__all__ = ["TrainOptions", "FinalScoring", "PRESET_NAMES", "get_preset", "TrainRecipe"]

PRESET_NAMES = ("demo", "wmt")


def _default(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls`: the loop's, the model's and the
    schedule's settings are defined there once, and `TrainOptions` takes them over."""
    (value,) = [f.default for f in fields(cls) if f.name == name]
    if value is dataclasses.MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no plain default")
    return value


@dataclass(frozen=True)
class FinalScoring:
    """How a standalone subnet run ends (``automoe train``, ``automoe retrain``): its final
    weights (the mean of the last `average_last` update checkpoints; 0 = the best by dev
    loss) and test BLEU by beam search (`beam`, `lenpen`; the first `test_sentences`, 0 =
    all). The one place of these defaults."""

    average_last: int = 0
    beam: int = 4
    lenpen: float = 0.6
    test_sentences: int = 0


@dataclass(frozen=True)
class TrainOptions:
    """Flat training options (see the module docstring).

    Attributes:
        max_updates: stop after this many updates.
        max_tokens: token budget of one batch, B * max(S, T) with padding.
        global_batches: batches per update over all ranks (accumulated); used when
            update_freq is 0.
        update_freq: batches per rank per update; 0 = ceil(global_batches / world_size).
        sampling: "uniform" or "sandwich" (supernet only).
        sandwich_random: random subnets per update besides largest and smallest.
        sample_only: train only "dense" or "moe" subnets (a few-shot sub-supernet).
        seed: data order, subnet sampling, dropout, initialisation, probes.
        schedule, lr, min_lr, warmup_updates, warmup_init_lr: the LR schedule (lr = peak).
        schedule_updates: the schedule's length (cosine end); 0 = max_updates at the start.
        label_smoothing, load_balance_coef, z_loss_coef, clip_norm, weight_decay: the loss
            and optimiser.
        dropout, attention_dropout, activation_dropout: model regularisation.
        validate_every, save_every, keep_last: validation, checkpoint_last.pt and the number
            of model-only checkpoints kept for averaging.
        valid_sentences: dev sentences validated (the first N; 0 = all).
        probe_random: random probe subnets validated besides the fixed ones.
        bf16: bf16 autocast on CUDA.
        normalize_before: pre-LN layers instead of post-LN (HAT/fairseq's default). The
            demo presets use pre-LN: on the demo corpus it reached at 200 updates the dev
            loss post-LN reached at 500 (docs/training.md).
        cpu_bf16: bf16 autocast of the training passes on the CPU as well.
        shared_positions: one sinusoid table of the model's largest width, sliced by every
            width (HAT), instead of one sinusoid per width (`ModelOptions.positions_dim`).
        distill_weight: in-place distillation weight under the sandwich rule (0 = off;
            `TrainConfig.distill_weight`).
        router_warmup: updates of uniformly random routing first (supernet only;
            `TrainConfig.router_warmup`).
    """

    max_updates: int
    max_tokens: int
    global_batches: int = 1
    update_freq: int = 0
    sampling: str = _default(SamplingRule, "kind")
    sandwich_random: int = _default(SamplingRule, "num_random")
    sample_only: str | None = None
    seed: int = _default(TrainConfig, "seed")
    schedule: str = _default(LRSchedule, "kind")
    lr: float = _default(LRSchedule, "max_lr")
    min_lr: float = _default(LRSchedule, "min_lr")
    warmup_updates: int = _default(LRSchedule, "warmup_updates")
    warmup_init_lr: float = _default(LRSchedule, "warmup_init_lr")
    schedule_updates: int = 0
    label_smoothing: float = _default(TrainConfig, "label_smoothing")
    load_balance_coef: float = _default(TrainConfig, "load_balance_coef")
    z_loss_coef: float = _default(TrainConfig, "z_loss_coef")
    clip_norm: float = _default(TrainConfig, "clip_norm")
    weight_decay: float = _default(TrainConfig, "weight_decay")
    dropout: float = _default(ModelOptions, "dropout")
    attention_dropout: float = _default(ModelOptions, "attention_dropout")
    activation_dropout: float = _default(ModelOptions, "activation_dropout")
    validate_every: int = _default(TrainConfig, "validate_every")
    save_every: int = _default(TrainConfig, "save_every")
    keep_last: int = _default(TrainConfig, "keep_last")
    valid_sentences: int = 0
    probe_random: int = 2
    bf16: bool = _default(TrainConfig, "bf16")
    normalize_before: bool = _default(ModelOptions, "normalize_before")
    cpu_bf16: bool = _default(TrainConfig, "cpu_bf16")
    shared_positions: bool = False
    distill_weight: float = _default(TrainConfig, "distill_weight")
    router_warmup: int = _default(TrainConfig, "router_warmup")

    def resolve(self, world_size: int) -> TrainOptions:
        """Fills update_freq (from global_batches) and schedule_updates (from max_updates),
        and checks every value by building the configs."""
        out = self
        if out.update_freq == 0:
            out = replace(out, update_freq=max(1, math.ceil(out.global_batches / world_size)))
        if out.schedule_updates == 0:
            out = replace(out, schedule_updates=out.max_updates)
        if out.schedule == "cosine" and out.warmup_updates >= out.schedule_updates:
            raise ValueError(f"warmup_updates ({out.warmup_updates}) must be smaller than the "
                             f"cosine schedule's length ({out.schedule_updates}, "
                             "--schedule-updates, default --max-updates)")
        if out.max_tokens < 1 or out.valid_sentences < 0 or out.probe_random < 0:
            raise ValueError("max_tokens must be >= 1, valid_sentences and probe_random >= 0; "
                             f"got {out.max_tokens}, {out.valid_sentences}, {out.probe_random}")
        out.train_config(supernet=True)
        out.model_options()
        return out

    def train_config(self, *, supernet: bool) -> TrainConfig:
        """The loop's settings (call on a resolved record)."""
        schedule = LRSchedule(self.schedule, max_lr=self.lr, warmup_updates=self.warmup_updates,
                              warmup_init_lr=self.warmup_init_lr, min_lr=self.min_lr,
                              total_updates=self.schedule_updates or self.max_updates)
        sampling = (SamplingRule(self.sampling, self.sandwich_random, self.sample_only)
                    if supernet else None)
        return TrainConfig(
            max_updates=self.max_updates, schedule=schedule, sampling=sampling, seed=self.seed,
            update_freq=self.update_freq or 1, label_smoothing=self.label_smoothing,
            load_balance_coef=self.load_balance_coef, z_loss_coef=self.z_loss_coef,
            clip_norm=self.clip_norm, weight_decay=self.weight_decay,
            validate_every=self.validate_every, save_every=self.save_every,
            keep_last=self.keep_last, bf16=self.bf16, cpu_bf16=self.cpu_bf16,
            distill_weight=self.distill_weight if supernet else 0.0,
            router_warmup=self.router_warmup if supernet else 0)

    def model_options(self, *, positions_dim: int | None = None) -> ModelOptions:
        """The model's options; `positions_dim` (the model's largest embedding width) is
        used only with ``shared_positions``."""
        return ModelOptions(dropout=self.dropout, attention_dropout=self.attention_dropout,
                            activation_dropout=self.activation_dropout,
                            normalize_before=self.normalize_before,
                            positions_dim=positions_dim if self.shared_positions else None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<options>") -> TrainOptions:
        check_known_fields(cls, data, source=source, what="training option(s)")
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{source}: bad training options ({err})") from None

    def override(self, changes: dict[str, Any]) -> TrainOptions:
        """A copy with `changes` (option name -> value) applied; unknown names are an error."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return replace(self, **changes)


# what a preset sets beyond the TrainOptions defaults (those of TrainConfig, LRSchedule,
# SamplingRule and ModelOptions)
_WMT: dict[str, Any] = dict(
    max_tokens=4096, global_batches=128, dropout=0.3, attention_dropout=0.1,
    validate_every=1000, save_every=1000)
_DEMO: dict[str, Any] = dict(
    max_tokens=2048, min_lr=1e-5, clip_norm=1.0, valid_sentences=300, validate_every=100,
    save_every=100, normalize_before=True)

_PRESETS: dict[tuple[str, str], TrainOptions] = {
    ("supernet", "wmt"): TrainOptions(max_updates=40_000, warmup_updates=10_000, **_WMT),
    ("subnet", "wmt"): TrainOptions(max_updates=40_000, warmup_updates=4_000, keep_last=10, **_WMT),
    # peak lr 2e-3: the probes reach the dev loss of the 1e-3 it replaced in 1.58x fewer
    # minutes (docs/benchmarks.md, "Quality per minute"); the subnet preset was not measured
    ("supernet", "demo"): TrainOptions(max_updates=600, warmup_updates=100,
                                       **{**_DEMO, "lr": 2e-3}),
    ("subnet", "demo"): TrainOptions(max_updates=400, warmup_updates=50, keep_last=5, **_DEMO),
}


def get_preset(name: str, kind: str) -> TrainOptions:
    """The preset `name` for `kind` ("supernet" or "subnet")."""
    if (kind, name) not in _PRESETS:
        if kind not in ("supernet", "subnet"):
            raise ValueError(f"preset kind {kind!r} is not 'supernet' or 'subnet'")
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESET_NAMES)}")
    return _PRESETS[(kind, name)]


@dataclass(frozen=True)
class TrainRecipe:
    """A training run before its paths are known: what ``automoe supernet train`` /
    ``automoe train`` take as ``--preset``, option flags and ``--device``.

    Attributes:
        preset: the preset (`PRESET_NAMES`).
        overrides: the options that differ from the preset (`TrainOptions` field -> value).
        device: the torch device it trains on (None: the commands' default, cuda when
            there is one).
    """

    preset: str = "demo"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", dict(self.overrides))
        get_preset(self.preset, "subnet").override(dict(self.overrides))  # unknown names fail now

    def options(self, kind: str) -> TrainOptions:
        """The resolved options of a new `kind` run ("supernet" or "subnet"), one process."""
        return get_preset(self.preset, kind).override(dict(self.overrides)).resolve(1)

    def with_overrides(self, changes: Mapping[str, Any]) -> TrainRecipe:
        """The same recipe with more overrides (later ones win)."""
        return replace(self, overrides={**self.overrides, **changes})
