"""`automoe retrain RUN_DIR`: retrain K subnets of a search's front from scratch as Ray Tune
trials and add their retrained test BLEU to the run's tables (see automoe.training.retrain)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from automoe.commands.train import add_training_options
from automoe.training.presets import PRESET_NAMES, TrainOptions
from automoe.training.retrain.settings import RetrainSettings

# shown in the help; the values themselves come from RetrainSettings when a flag is not given
_D = {f.name: f.default for f in dataclasses.fields(RetrainSettings)}

# settings flags (dest -> RetrainSettings field); all default to None = "not given", so a
# resumed job can tell them apart from its stored values
RETRAIN_FLAGS: list[tuple[str, type, str]] = [
    ("top", int, f"retrain K subnets of the front, spread along the run's first cost "
                 f"objective, both extremes included (default {_D['top']}; more than the "
                 "front = all)"),
    ("report-every", int, "updates per Tune report (dev loss + checkpoint); also the "
                          "validation interval (default: the preset's --validate-every)"),
    ("grace-updates", int, "ASHA: updates before a trial may be stopped "
                           "(default max(report-every, max-updates/4))"),
    ("reduction-factor", int, f"ASHA: keep the best 1/N at each rung (default "
                              f"{_D['reduction_factor']})"),
    ("average-last", int, "final weights = mean of the last N update checkpoints (needs "
                          "--keep-last >= N); default: the best by dev loss"),
    ("beam", int, f"beam size for test BLEU (default {_D['beam']})"),
    ("lenpen", float, f"length penalty for test BLEU (default {_D['lenpen']})"),
    ("test-sentences", int, f"score the first N test sentences (default "
                            f"{_D['test_sentences']}; 0 = all)"),
    ("cpus-per-trial", int, f"CPUs per trial, also its torch threads (default "
                            f"{_D['cpus_per_trial']})"),
    ("gpus-per-trial", float, f"GPUs per trial; > 0 trains on cuda (default "
                              f"{_D['gpus_per_trial']:g})"),
    ("concurrent", int, f"at most N trials at once (default {_D['concurrent']}; 0 = as many "
                        "as fit)"),
    ("max-failures", int, f"Tune retries of a failed trial, each from its last checkpoint "
                          f"(default {_D['max_failures']})"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "retrain", help="retrain front subnets from scratch as Ray Tune trials (test BLEU)",
        description="Retrain K subnets of a search's Pareto front (or --keys) from scratch, "
                    "one Ray Tune trial each (resources per trial, a Tune checkpoint every "
                    "--report-every updates, exact resume, optional ASHA early stopping), "
                    "score test BLEU/chrF by beam search and write RUN_DIR/retrained.csv and "
                    "a bleu_retrained column in RUN_DIR/pareto.csv. Trials and models live "
                    "in RUN_DIR/retrain/.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="an `automoe search` run dir")
    p.add_argument("--keys", default=None, metavar="K1,K2",
                   help="retrain these candidate keys instead of --top")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None,
                   help=f"training option defaults (default {_D['preset']}), as `automoe train`")
    p.add_argument("--early-stop", choices=("none", "asha"), default=None,
                   help=f"asha: stop trials whose dev loss lags at ASHA's rungs (default "
                        f"{_D['early_stop']})")
    for name, kind, text in RETRAIN_FLAGS:
        p.add_argument(f"--{name}", type=kind, default=None, help=text,
                       metavar="N" if kind is int else "X")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="join this Ray cluster (RUN_DIR on a shared filesystem) instead of "
                        "starting a local one")
    p.add_argument("--resume", action="store_true",
                   help="continue the job in RUN_DIR/retrain: finished trials are kept, the "
                        "others train on from their own last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="print the subnets that would be retrained and stop")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("training options (default: the preset's), as `automoe train`")
    add_training_options(g, skip=("validate-every",))  # that one is --report-every
    p.set_defaults(func=_run)


def trial_settings(args: argparse.Namespace, flags: list[tuple[str, type, str]]) -> dict:
    """`RetrainSettings` fields given on the command line (None = not given): `flags`, the
    preset, the Ray address and the training-option overrides."""
    fields = set(TrainOptions.__dataclass_fields__)
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    given = {name.replace("-", "_"): getattr(args, name.replace("-", "_"))
             for name, _, _ in flags}
    given.update(preset=args.preset, ray_address=args.ray_address, overrides=overrides or None)
    return given


def _given(args: argparse.Namespace) -> dict:
    given = trial_settings(args, RETRAIN_FLAGS)
    given.update(early_stop=args.early_stop,
                 keys=tuple(k.strip() for k in args.keys.split(",") if k.strip())
                 if args.keys is not None else None, progress=not args.quiet)
    if given.get("keys") is not None and given.get("top") is not None:
        raise ValueError("--keys and --top exclude each other")
    return {k: v for k, v in given.items() if v is not None}


def _run(args: argparse.Namespace) -> int:
    from automoe.training.retrain import RetrainSettings, plan_keys, resume_settings, retrain

    given = _given(args)
    if args.resume:
        settings = resume_settings(args.run_dir, given)
    else:
        settings = RetrainSettings(run_dir=args.run_dir, **given)
    if args.dry_run:
        rows = plan_keys(settings)
        cols = [c for c in ("key", "bleu", "loss", "flops", "params", "latency_ms", "experts")
                if c in rows]
        print(rows[cols].to_string(index=False))
        return 0
    outcome = retrain(settings, resume=args.resume)
    cols = [c for c in ("key", "status", "flops", "latency_ms", "bleu", "loss",
                        "bleu_retrained", "chrf_retrained", "best_dev_loss", "updates")
            if c in outcome.table]
    print(outcome.table[cols].to_string(index=False, float_format=_fmt))
    print(f"wrote {outcome.path} and the bleu_retrained column of "
          f"{outcome.path.parent / 'pareto.csv'}; models in "
          f"{outcome.path.parent / 'retrain' / 'models'}")
    unfinished = outcome.table.loc[outcome.table["status"].isin(("interrupted", "error")), "key"]
    if len(unfinished):
        print(f"retrain: {len(unfinished)} trial(s) did not finish ({', '.join(unfinished)}); "
              f"continue with: automoe retrain {args.run_dir} --resume", file=sys.stderr)
        return 1
    return 0


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.4g}"
