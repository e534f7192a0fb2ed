"""What the workflows share: a log of named steps with their wall times, and the data and
training steps, each the library call its ``automoe`` command makes (new or resumed as the
command would be)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automoe.data import PrepareOptions, PrepareResult, make_source, prepare
from automoe.training.presets import FinalScoring, TrainRecipe
from automoe.training.runs import RunSettings, resolve_run, train_subnet, train_supernet
from supernet.training.loop import TrainResult

if TYPE_CHECKING:
    from automoe.study import StepClock
    from search_spaces.config import SubnetConfig

__all__ = ["Steps", "prepare_corpus", "train_supernet_run", "train_subnet_run", "run_settings",
           "training_finished"]


class Steps:
    """Says each step before it runs (``== name: what``) and keeps its wall seconds, in
    `timings` and, when given, in a study's `StepClock` (``study.json``)."""

    def __init__(self, say: Callable[[str], None], clock: StepClock | None = None) -> None:
        self.say, self.clock = say, clock
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        self.say(f"== {name}: {what}")
        began = time.perf_counter()
        if self.clock is None:
            yield
        else:
            with self.clock.timing(name):
                yield
        self.timings.append((name, time.perf_counter() - began))


def prepare_corpus(out: Path, corpus: str, options: PrepareOptions, *,
                   targets: Sequence[str] | None = None, quiet: bool = False
                   ) -> PrepareResult:
    """``automoe data prepare --corpus CORPUS [--targets ...]``: builds (or confirms up to
    date) the data dir `out`."""
    source = make_source(corpus=corpus, targets=None if targets is None else list(targets),
                         verbose=not quiet)
    return prepare(out, source, options, verbose=not quiet)


def training_finished(run: Path) -> bool:
    """A training run dir that has its settings and a last checkpoint (it resumes)."""
    return (run / "run.json").is_file() and (run / "checkpoint_last.pt").is_file()


def train_supernet_run(out: Path, recipe: TrainRecipe, *, data: Path, space: str,
                       init_from: Path | None = None, quiet: bool = False) -> TrainResult:
    """``automoe supernet train`` into `out` (see `run_settings`)."""
    settings, resume = run_settings(out, recipe, kind="supernet", data=data, space=space,
                                    init_from=init_from)
    return train_supernet(settings, out, resume=resume, device=recipe.device,
                          progress=not quiet)


def train_subnet_run(out: Path, recipe: TrainRecipe, *, data: Path, subnet: SubnetConfig,
                     final: FinalScoring | None = None, quiet: bool = False
                     ) -> dict[str, Any]:
    """``automoe train --subnet`` into `out` (see `run_settings`); `final`: how the run
    ends (final weights, test decoding). Returns the summary of ``results.json``."""
    settings, resume = run_settings(out, recipe, kind="subnet", data=data, subnet=subnet)
    final = final or FinalScoring()
    return train_subnet(settings, out, resume=resume, average_last=final.average_last,
                        beam=final.beam, lenpen=final.lenpen,
                        test_sentences=final.test_sentences, device=recipe.device,
                        progress=not quiet)


def run_settings(out: Path, recipe: TrainRecipe, *, kind: str, data: Path,
                 space: str | None = None, subnet: SubnetConfig | None = None,
                 init_from: Path | None = None) -> tuple[RunSettings, bool]:
    """The settings of the `kind` run in `out` and whether it resumes: a run dir with a
    checkpoint resumes with its stored settings (only the recipe's ``max_updates`` may
    extend it); otherwise a new run starts from `recipe` and the given data, space or
    subnet, and inherited weights."""
    if training_finished(out):
        overrides = {k: v for k, v in recipe.overrides.items() if k == "max_updates"}
        return resolve_run(out, kind=kind, resume=True, preset=None, overrides=overrides), True
    fixed: dict[str, Any] = {"data_dir": str(data),
                             "init_from": None if init_from is None else str(init_from)}
    fixed.update({"space": space} if kind == "supernet" else {"subnet": subnet})
    return resolve_run(out, kind=kind, resume=False, preset=recipe.preset,
                       overrides=dict(recipe.overrides), **fixed), False
