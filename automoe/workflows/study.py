"""`run_study`: the reference study's steps (`automoe.study`), each the library call of its
``automoe`` command with the plan's typed settings; resumable: a finished step is skipped,
an interrupted one continues from its own checkpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from automoe.data import load_split
from automoe.fidelity import FidelitySettings, run_fidelity
from automoe.io_utils import atomic_write_csv, atomic_write_json
from automoe.plots import load_run, plot_runs
from automoe.run_dir import RETRAINED, RunDir, read_run
from automoe.search.run import run_search
from automoe.search.settings import SearchSettings
from automoe.search.settings import resume_settings as resume_search
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
from automoe.training.presets import TrainRecipe
from automoe.training.retrain import RetrainSettings, retrain
from automoe.training.retrain import resume_settings as resume_retrain
from automoe.workflows.pipeline import search_finished
from automoe.workflows.steps import Steps, prepare_corpus, train_supernet_run

__all__ = ["run_study"]


def run_study(plan: StudyPlan, out: str | Path, *, quiet: bool = False,
              echo: Callable[[str], None] | None = None) -> Path:
    """Runs (or resumes) the study into `out`; returns the path of ``moe_vs_dense.csv`` (of
    ``fidelity/fidelity.json`` for a plan without searches)."""
    say = echo or (lambda line: print(line, flush=True))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    clock = StepClock.resume(root / "study.json", plan_json(plan), identity=results_identity)
    step = Steps(say, clock)
    timings = clock.seconds

    data, supernet = root / "data", root / "supernet"
    if not (data / "spm.model").is_file():  # (results/ keeps meta.json alone)
        with step("data", f"prepare {plan.corpus} into {data}"):
            prepare_corpus(data, plan.corpus, plan.prepare, quiet=quiet)
    fidelity = root / "fidelity"
    if not (RunDir.at(fidelity).has_candidates() and not plan.searches):
        # (once every inherited score is in, the fidelity study no longer needs the supernet)
        _supernet(step, "supernet", supernet, plan.supernet, plan, data, quiet)
    if not (fidelity / "fidelity.json").is_file():
        with step("fidelity", f"inherited vs standalone scores into {fidelity}"):
            _fidelity(plan, supernet, data, fidelity, quiet=quiet)
    if plan.variants or plan.few_shot:
        _variants(step, plan, root, data, quiet)
    if not plan.searches:
        say(f"study finished: {fidelity / 'fidelity.json'}; "
            f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())}")
        return fidelity / "fidelity.json"
    for name, extra in (("search", ()), ("dense_search", ("experts<=1",))):
        run = root / name
        if search_finished(run):
            continue
        with step(name, f"search {plan.space} into {run}"):
            if RunDir.at(run).has_meta():
                settings = resume_search(str(run), progress=not quiet)
            else:
                fields: dict[str, Any] = dict(plan.search)
                fields["constraints"] = (*fields.get("constraints", ()), *extra)
                settings = SearchSettings(supernet=str(supernet), data=str(data),
                                          out=str(run), progress=not quiet, **fields)
            run_search(settings)
    moe_run, dense_run = root / "search", root / "dense_search"
    _retrain(step, moe_run, {"top": plan.top}, plan, quiet)
    moe = retrained_table(moe_run)
    dense_front = read_run(dense_run, need_front=True).front
    pairs = matched_dense(moe, dense_front)
    _retrain(step, dense_run, {"keys": tuple(dict.fromkeys(pairs.values()))}, plan, quiet)
    table = moe_vs_dense(pairs, moe_run, dense_run, load_split(data, "test").references(),
                         nll=functools.partial(test_nll, data=data))
    path = root / "moe_vs_dense.csv"
    atomic_write_csv(table, path, float_format="%.6g")
    with step("plot", f"both fronts into {root / 'plots'}"):
        plot_runs([load_run(moe_run, "MoE space"), load_run(dense_run, "dense only")],
                  root / "plots")
    say(f"study finished: {path}; fidelity in {fidelity}; "
        f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())}")
    return path


def _fidelity(plan: StudyPlan, supernet: Path, data: Path, out: Path, *, quiet: bool,
              standalone_from: Path | None = None, supernet_moe: Path | None = None) -> None:
    """The fidelity study of `supernet` into `out` (resumed when `out` has begun)."""
    settings = FidelitySettings(
        supernet=str(supernet), data=str(data), out=str(out), retrain=plan.standalone,
        standalone_from=None if standalone_from is None else str(standalone_from),
        supernet_moe=None if supernet_moe is None else str(supernet_moe),
        progress=not quiet, **plan.fidelity)
    run_fidelity(settings, resume=RunDir.at(out).has_meta())


def _variants(step: Steps, plan: StudyPlan, root: Path, data: Path, quiet: bool) -> None:
    """Each variant's supernet and fidelity study (reusing ``fidelity/``'s standalone
    models), then ``variants.json``."""
    studies = {"plain": root / "fidelity"}
    for name, overrides in plan.variants:
        supernet, fidelity = root / f"supernet-{name}", root / f"fidelity-{name}"
        studies[name] = fidelity
        if (fidelity / "fidelity.json").is_file():
            continue
        if not RunDir.at(fidelity).has_candidates():  # else: no supernet needed
            _supernet(step, f"supernet-{name}", supernet, plan.supernet.with_overrides(overrides),
                      plan, data, quiet)
        with step(f"fidelity-{name}", f"inherited scores of {supernet} into {fidelity}"):
            _fidelity(plan, supernet, data, fidelity, quiet=quiet,
                      standalone_from=root / "fidelity")
    if plan.few_shot:
        studies["few-shot"] = _few_shot(step, plan, root, data, quiet)
    atomic_write_json(root / "variants.json", compare_variants(studies, reference="plain"))


def _few_shot(step: Steps, plan: StudyPlan, root: Path, data: Path, quiet: bool) -> Path:
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
            _supernet(step, "supernet-base", base, plan.supernet, plan, data, quiet)
        for kind, run in parts.items():
            recipe = plan.supernet.with_overrides({**plan.few_shot, "sample_only": kind})
            _supernet(step, f"supernet-few-shot-{kind}", run, recipe, plan, data, quiet,
                      init_from=base)
    with step("fidelity-few-shot", f"each subnet scored by its own sub-supernet into "
                                   f"{fidelity}"):
        _fidelity(plan, parts["dense"], data, fidelity, quiet=quiet,
                  standalone_from=root / "fidelity", supernet_moe=parts["moe"])
    return fidelity


def _supernet(step: Steps, name: str, run: Path, recipe: TrainRecipe, plan: StudyPlan,
              data: Path, quiet: bool, *, init_from: Path | None = None) -> None:
    """Trains (or resumes) the supernet in `run`."""
    with step(name, f"train the {plan.space} supernet into {run}"):
        train_supernet_run(run, recipe, data=data, space=plan.space, init_from=init_from,
                           quiet=quiet)


def _retrain(step: Steps, run: Path, choose: Mapping[str, Any], plan: StudyPlan,
             quiet: bool) -> None:
    """Retrains the chosen subnets of search `run` with the plan's standalone settings."""
    table = RunDir.at(run).read_optional(RETRAINED)
    if table is not None and (table["status"] == "finished").all():
        return
    with step(f"retrain {run.name}", f"subnets of {run} from scratch"):
        if (run / "retrain" / "retrain.json").is_file():
            settings = resume_retrain(run, {"progress": not quiet})
        else:
            settings = RetrainSettings(run_dir=str(run), progress=not quiet, **choose,
                                       **plan.standalone)
        outcome = retrain(settings, resume=(run / "retrain" / "retrain.json").is_file())
    unfinished = outcome.table.loc[outcome.table["status"].isin(("interrupted", "error")), "key"]
    if len(unfinished):
        raise RuntimeError(f"retrain {run}: {len(unfinished)} trial(s) did not finish "
                           f"({', '.join(unfinished)}); run the study again to continue them")
