"""`run_study`: the reference study's steps (`automoe.study`), each an ``automoe`` command
run in this process and echoed, so the log is the recipe; resumable: a finished step is
skipped, an interrupted one continues from its own checkpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from automoe.data import load_split
from automoe.io_utils import atomic_write_csv, atomic_write_json
from automoe.run_dir import RETRAINED, RunDir, read_run
from automoe.study import (
    StepClock,
    StudyPlan,
    matched_dense,
    moe_vs_dense,
    plan_json,
    results_identity,
    retrained_table,
    test_nll,
)
from automoe.supernet_variants import compare_variants
from automoe.workflows.pipeline import run_cli, search_finished

__all__ = ["run_study"]


def run_study(plan: StudyPlan, out: str | Path, *, quiet: bool = False,
              echo: Callable[[str], None] | None = None) -> Path:
    """Runs (or resumes) the study into `out`; returns the path of ``moe_vs_dense.csv`` (of
    ``fidelity/fidelity.json`` for a plan without searches)."""
    say = echo or (lambda line: print(line, flush=True))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    q = ("-q",) if quiet else ()
    clock = StepClock.resume(root / "study.json", plan_json(plan), identity=results_identity)
    timings = clock.seconds

    def step(name: str, argv: Sequence[str]) -> None:
        with clock.timing(name):
            run_cli(list(argv), say)

    data, supernet = root / "data", root / "supernet"
    if not (data / "spm.model").is_file():  # (results/ keeps meta.json alone)
        step("data", ["data", "prepare", "--corpus", plan.corpus, "--out", str(data),
                      *plan.prepare_args, *q])
    fidelity = root / "fidelity"
    if RunDir.at(fidelity).has_candidates() and not plan.searches:
        pass  # every inherited score is in: the fidelity study no longer needs the supernet
    elif (supernet / "run.json").is_file():
        step("supernet", ["supernet", "train", "--out", str(supernet), "--resume", *q])
    else:
        step("supernet", ["supernet", "train", "--space", plan.space, "--data", str(data),
                          "--out", str(supernet), *plan.train_args, *q])
    if not (fidelity / "fidelity.json").is_file():
        resume = ("--resume",) if RunDir.at(fidelity).has_meta() else ()
        step("fidelity", ["fidelity", str(supernet), "--data", str(data), "--out", str(fidelity),
                          *plan.fidelity_args, *plan.budget_args, *plan.trial_args, *resume,
                          *q])
    if plan.variants or plan.few_shot:
        _variants(step, plan, root, data, q)
    if not plan.searches:
        say(f"study finished: {fidelity / 'fidelity.json'}; "
            f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())}")
        return fidelity / "fidelity.json"
    for name, extra in (("search", ()), ("dense_search", ("--constraint", "experts<=1"))):
        run = root / name
        if search_finished(run):
            continue
        if RunDir.at(run).has_meta():
            step(name, ["search", "--resume", str(run), *(("--quiet",) if quiet else ())])
        else:
            step(name, ["search", "--supernet", str(supernet), "--data", str(data), "--out",
                        str(run), *plan.search_args, *extra, *(("--quiet",) if quiet else ())])
    moe_run, dense_run = root / "search", root / "dense_search"
    _retrain(step, moe_run, ["--top", str(plan.top)], plan, q)
    moe = retrained_table(moe_run)
    dense_front = read_run(dense_run, need_front=True).front
    pairs = matched_dense(moe, dense_front)
    _retrain(step, dense_run, ["--keys", ",".join(dict.fromkeys(pairs.values()))], plan, q)
    table = moe_vs_dense(pairs, moe_run, dense_run, load_split(data, "test").references(),
                         nll=functools.partial(test_nll, data=data))
    path = root / "moe_vs_dense.csv"
    atomic_write_csv(table, path, float_format="%.6g")
    step("plot", ["plot", str(moe_run), str(dense_run), "-o", str(root / "plots"),
                  "--label", "MoE space", "--label", "dense only"])
    say(f"study finished: {path}; fidelity in {fidelity}; "
        f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())}")
    return path


def _variants(step: Callable, plan: StudyPlan, root: Path, data: Path,
              q: tuple[str, ...]) -> None:
    """Each variant's supernet and fidelity study (reusing ``fidelity/``'s standalone
    models), then ``variants.json``."""

    studies = {"plain": root / "fidelity"}
    for name, flags in plan.variants:
        supernet, fidelity = root / f"supernet-{name}", root / f"fidelity-{name}"
        studies[name] = fidelity
        if (fidelity / "fidelity.json").is_file():
            continue
        if not RunDir.at(fidelity).has_candidates():  # else: no supernet needed
            _supernet_step(step, f"supernet-{name}", supernet,
                           ["--space", plan.space, "--data", str(data), *plan.train_args,
                            *flags], q)
        resume = ("--resume",) if RunDir.at(fidelity).has_meta() else ()
        step(f"fidelity-{name}", ["fidelity", str(supernet), "--data", str(data), "--out",
                                  str(fidelity), *plan.fidelity_args, *plan.budget_args,
                                  *plan.trial_args, "--standalone-from",
                                  str(root / "fidelity"), *resume, *q])
    if plan.few_shot:
        studies["few-shot"] = _few_shot(step, plan, root, data, q)
    atomic_write_json(root / "variants.json", compare_variants(studies, reference="plain"))


def _few_shot(step: Callable, plan: StudyPlan, root: Path, data: Path,
              q: tuple[str, ...]) -> Path:
    """Two sub-supernets from the plain one (dense only, MoE only) and the fidelity study
    that scores each subnet with its own; returns that study's directory."""
    fidelity = root / "fidelity-few-shot"
    if (fidelity / "fidelity.json").is_file():
        return fidelity
    parts = {kind: root / f"supernet-few-shot-{kind}" for kind in ("dense", "moe")}
    if not RunDir.at(fidelity).has_candidates():
        base = root / "supernet"
        if not (base / "checkpoint_last.pt").is_file():  # a study resumed elsewhere
            base = root / "supernet-base"
            _supernet_step(step, "supernet-base", base,
                           ["--space", plan.space, "--data", str(data), *plan.train_args], q)
        for kind, run in parts.items():
            _supernet_step(step, f"supernet-few-shot-{kind}", run,
                           ["--space", plan.space, "--data", str(data), *plan.train_args,
                            *plan.few_shot, "--init-from", str(base), "--sample-only", kind], q)
    resume = ("--resume",) if RunDir.at(fidelity).has_meta() else ()
    step("fidelity-few-shot", ["fidelity", str(parts["dense"]), "--supernet-moe",
                               str(parts["moe"]), "--data", str(data), "--out", str(fidelity),
                               *plan.fidelity_args, *plan.budget_args, *plan.trial_args,
                               "--standalone-from", str(root / "fidelity"), *resume, *q])
    return fidelity


def _supernet_step(step: Callable, name: str, run: Path, args: list[str],
                   q: tuple[str, ...]) -> None:
    """Trains (or resumes) the supernet in `run`, unless it is finished."""
    if (run / "run.json").is_file() and (run / "checkpoint_last.pt").is_file():
        step(name, ["supernet", "train", "--out", str(run), "--resume", *q])
    else:
        step(name, ["supernet", "train", "--out", str(run), *args, *q])


def _retrain(step: Callable, run: Path, choose: list[str], plan: StudyPlan,
             q: tuple[str, ...]) -> None:
    table = RunDir.at(run).read_optional(RETRAINED)
    if table is not None and (table["status"] == "finished").all():
        return
    if (run / "retrain" / "retrain.json").is_file():
        step(f"retrain {run.name}", ["retrain", str(run), "--resume", *q])
    else:
        step(f"retrain {run.name}", ["retrain", str(run), *choose, *plan.budget_args,
                                     *plan.trial_args, *q])
