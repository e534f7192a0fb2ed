"""`RetrainSettings`: what ``automoe retrain`` does, and `TrialJob`: what each of its trials
reads (torch-, pandas- and Ray-free, so the command line takes its defaults from here and
a trial imports its job's record without the job's module)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from automoe.training.presets import PRESET_NAMES, FinalScoring, TrainOptions, get_preset
from search_spaces.checks import check_ints, check_known_fields
from search_spaces.config import SubnetConfig

__all__ = ["RetrainSettings", "TrialJob", "EXECUTION_FIELDS"]

# settings that only say how the job runs: they may change on --resume
EXECUTION_FIELDS = ("run_dir", "ray_address", "progress")


@dataclass(frozen=True)
class RetrainSettings:
    """What `retrain` does (stored in ``retrain.json``).

    Attributes:
        run_dir: the search RUN_DIR (``pareto.csv``, ``candidates.csv``, ``search.json``).
        top: how many front subnets, spread along the front (`choose_keys`).
        keys: retrain exactly these candidate keys instead (any row of candidates.csv).
        preset, overrides: training options of `automoe train` (TrainOptions field -> value).
        report_every: updates per chunk = per Tune report (dev loss + checkpoint); the
            training's ``validate_every``. 0: the options' ``validate_every``.
        early_stop: "none" or "asha" (stop trials whose dev loss lags at a rung).
        grace_updates: ASHA's grace period in updates (0: max(report_every, max_updates/4)).
        reduction_factor: ASHA's reduction factor.
        average_last, beam, lenpen, test_sentences: final weights and test BLEU (as
            `automoe train`).
        cpus_per_trial: CPUs per trial (also its torch threads); gpus_per_trial: GPUs (a
            trial with GPUs trains on cuda).
        concurrent: at most this many trials at once (0: as many as fit).
        max_failures: Tune retries of a failed trial (each continues from its checkpoint).
        ray_address: join this cluster ("host:port" or "auto"); None starts a local one.
        progress: a progress bar over all trials' updates (stderr).
    """

    run_dir: str
    top: int = 3
    keys: tuple[str, ...] = ()
    preset: str = "demo"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    report_every: int = 0
    early_stop: str = "none"
    grace_updates: int = 0
    reduction_factor: int = 3
    average_last: int = FinalScoring.average_last
    beam: int = FinalScoring.beam
    lenpen: float = FinalScoring.lenpen
    test_sentences: int = FinalScoring.test_sentences
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    concurrent: int = 0
    max_failures: int = 2
    ray_address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "overrides", dict(self.overrides))
        check_ints("retrain settings", self, {
            "top": 1, "beam": 1, "cpus_per_trial": 1, "report_every": 0, "grace_updates": 0,
            "reduction_factor": 2, "average_last": 0, "test_sentences": 0, "concurrent": 0,
            "max_failures": 0})
        if not self.gpus_per_trial >= 0:
            raise ValueError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial!r}")
        if self.early_stop not in ("none", "asha"):
            raise ValueError(f"--early-stop {self.early_stop!r}: expected 'none' or 'asha'")
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"--preset {self.preset!r}: expected one of {list(PRESET_NAMES)}")
        if "validate_every" in self.overrides:
            raise ValueError("set the validation interval with report_every (--report-every)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["keys"], data["overrides"] = list(self.keys), dict(self.overrides)
        return data

    def options(self) -> TrainOptions:
        """The resolved training options of every trial (validate_every = report_every)."""
        opts = get_preset(self.preset, "subnet").override(dict(self.overrides))
        every = self.report_every or opts.validate_every
        if every < 1:
            raise ValueError("--report-every must be >= 1 (the options validate never)")
        opts = opts.override({"validate_every": every}).resolve(world_size=1)
        if self.average_last > opts.keep_last:
            raise ValueError(f"--average-last {self.average_last} needs --keep-last >= "
                             f"{self.average_last} (the options keep {opts.keep_last})")
        return opts


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a retrain job needs, checked by `retrain` before any trial runs.

    Tune's param space holds its `to_dict` (plain JSON), and each trial reads it back with
    `from_dict`; a dict of the same keys written by an older version reads the same.

    Attributes:
        data_dir: the prepared data dir of the search.
        models_dir: where each trial's run dir ``<key>/`` lives.
        options: the resolved training options of every trial.
        configs: subnet key -> its architecture.
        report_every: updates per chunk (Tune report + checkpoint); the options' validation.
        average_last, beam, lenpen, test_sentences: final weights and test BLEU.
        cpus: CPUs of a trial (its torch threads); gpus: its GPUs (> 0 trains on cuda).
        continue_run_dirs: ``retrain --resume``: a trial without a Tune checkpoint continues
            from its run dir's own ``checkpoint_last.pt``.
    """

    data_dir: str
    models_dir: str
    options: TrainOptions
    configs: Mapping[str, SubnetConfig]
    report_every: int
    average_last: int
    beam: int
    lenpen: float
    test_sentences: int
    cpus: int
    gpus: float
    continue_run_dirs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "options": self.options.to_dict(),
                "configs": {k: c.to_dict() for k, c in self.configs.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "retrain job") -> TrialJob:
        check_known_fields(cls, data, source=source, what="field(s)")
        try:
            configs = {k: SubnetConfig.from_dict(c, source=f"{source}: configs[{k!r}]")
                       for k, c in data["configs"].items()}
            options = TrainOptions.from_dict(data["options"], source=f"{source}: options")
            return cls(**{**data, "options": options, "configs": configs})
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: bad retrain job ({err!r})") from None
