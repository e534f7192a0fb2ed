"""`run_task_study`: the task-routing study's steps (`automoe.task_study`), the data and
training steps as ``automoe`` commands run in this process and echoed; resumable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from automoe.workflows.pipeline import run_cli

__all__ = ["run_task_study"]


def run_task_study(plan: TaskStudyPlan, out: str | Path, *, data_dir: str | Path | None = None,
                   quiet: bool = False, echo: Callable[[str], None] | None = None) -> Path:
    """Runs (or resumes) the study into `out`; returns ``comparisons.csv``. ``data_dir``:
    a prepared multilingual data dir instead of preparing the plan's corpus."""
    say = echo or (lambda line: print(line, flush=True))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    q = ("-q",) if quiet else ()
    clock = StepClock.resume(root / "study.json", _plan_json(plan))

    def step(name: str, argv: Sequence[str]) -> None:
        with clock.timing(name):
            run_cli(list(argv), say)

    data = Path(data_dir) if data_dir is not None else root / "data"
    if data_dir is None and not (data / "spm.model").is_file():
        step("data", ["data", "prepare", "--corpus", plan.corpus, "--targets",
                      ",".join(plan.targets), "--out", str(data), *plan.prepare_args, *q])
    configs = systems(plan)
    for name, config in configs.items():
        atomic_write_text(root / "configs" / f"{name}.json", config.to_json(indent=2) + "\n")
    for name in SYSTEMS:
        for seed in plan.seeds:
            run = root / "train" / f"{name}-s{seed}"
            if (run / "model" / "config.json").is_file():
                continue
            resume = (run / "run.json").is_file()
            step(f"train {name} s{seed}", ["train", "--out", str(run), "--resume", *q] if resume
                 else ["train", "--subnet", str(root / "configs" / f"{name}.json"), "--data",
                       str(data), "--out", str(run), "--seed", str(seed), *plan.train_args, *q])
    scores = root / "scores.csv"
    if not scores.is_file():
        with clock.timing("test"):
            atomic_write_csv(score_tests(plan, root, data, say), scores, float_format="%.6g")
    serving = root / "serving.csv"
    if not serving.is_file():
        with clock.timing("serving"):
            atomic_write_csv(serving_table(plan, root, data, say), serving, float_format="%.6g")
    comparisons = root / "comparisons.csv"
    atomic_write_csv(compare_systems(root / "sentences", plan.targets, plan.seeds,
                                     resamples=plan.resamples), comparisons, float_format="%.6g")
    say(f"study finished: {comparisons}")
    return comparisons


def _plan_json(plan: TaskStudyPlan) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()}
