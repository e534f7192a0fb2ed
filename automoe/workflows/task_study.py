"""`run_task_study`: the task-routing study's steps (`automoe.task_study`), the data and
training steps the library calls of ``automoe data prepare`` and ``automoe train`` with the
plan's settings; resumable."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from automoe.io_utils import atomic_write_csv, atomic_write_text
from automoe.study import StepClock
from automoe.task_study import (
    SYSTEMS,
    TaskStudyPlan,
    compare_systems,
    score_tests,
    serving_table,
    systems,
)
from automoe.workflows.steps import Steps, prepare_corpus, train_subnet_run

__all__ = ["run_task_study"]


def run_task_study(plan: TaskStudyPlan, out: str | Path, *, data_dir: str | Path | None = None,
                   quiet: bool = False, echo: Callable[[str], None] | None = None) -> Path:
    """Runs (or resumes) the study into `out`; returns ``comparisons.csv``. ``data_dir``:
    a prepared multilingual data dir instead of preparing the plan's corpus."""
    say = echo or (lambda line: print(line, flush=True))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    clock = StepClock.resume(root / "study.json", plan_json(plan))
    step = Steps(say, clock)

    data = Path(data_dir) if data_dir is not None else root / "data"
    if data_dir is None and not (data / "spm.model").is_file():
        with step("data", f"prepare {plan.corpus} (en -> {', '.join(plan.targets)}) into "
                          f"{data}"):
            prepare_corpus(data, plan.corpus, plan.prepare, targets=plan.targets, quiet=quiet)
    configs = systems(plan)
    for name, config in configs.items():
        atomic_write_text(root / "configs" / f"{name}.json", config.to_json(indent=2) + "\n")
    for name in SYSTEMS:
        for seed in plan.seeds:
            run = root / "train" / f"{name}-s{seed}"
            if (run / "model" / "config.json").is_file():
                continue
            with step(f"train {name} s{seed}", f"{name} from scratch, seed {seed}, into {run}"):
                train_subnet_run(run, plan.train.with_overrides({"seed": seed}), data=data,
                                 subnet=configs[name], final=plan.final, quiet=quiet)
    scores = root / "scores.csv"
    if not scores.is_file():
        with step("test", f"every model on each language's test pairs into {scores}"):
            atomic_write_csv(score_tests(plan, root, data, say), scores, float_format="%.6g")
    serving = root / "serving.csv"
    if not serving.is_file():
        with step("serving", f"what serves each language, timed, into {serving}"):
            atomic_write_csv(serving_table(plan, root, data, say), serving, float_format="%.6g")
    comparisons = root / "comparisons.csv"
    atomic_write_csv(compare_systems(root / "sentences", plan.targets, plan.seeds,
                                     resamples=plan.resamples), comparisons, float_format="%.6g")
    say(f"study finished: {comparisons}")
    return comparisons


def plan_json(plan: TaskStudyPlan) -> dict:
    """The plan as JSON data (what ``study.json`` records and resume compares)."""
    return json.loads(json.dumps(asdict(plan)))
