"""`automoe fidelity SUPERNET_RUN --data D --out DIR`: does the supernet rank subnets as
training them alone does? Inherited vs standalone scores of N subnets stratified over
FLOPs, Kendall tau / Spearman with intervals, beside the trivial proxies (automoe.fidelity)."""

from __future__ import annotations

import argparse
import json

from automoe.commands.retrain import _FLAGS as RETRAIN_FLAGS
from automoe.commands.retrain import trial_settings
from automoe.commands.train import add_training_options
from automoe.training.presets import PRESET_NAMES

# the retrain flags that make sense for a study (the subnets are the study's own)
_TRIAL_FLAGS = [f for f in RETRAIN_FLAGS if f[0] not in ("top", "grace-updates",
                                                         "reduction-factor")]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fidelity", help="inherited vs standalone scores of N subnets: does the supernet rank "
                         "as training does?",
        description="Choose N subnets of the supernet's space (its reference subnets, --dense "
                    "dense ones, the rest MoE, stratified over FLOPs), score each with the "
                    "supernet's weights (dev loss +- SE, BLEU/chrF with 95%% intervals), train "
                    "each from scratch with the same budget as Ray Tune trials (as `automoe "
                    "retrain`), score the trained models the same way, and report Kendall tau "
                    "and Spearman rho with bootstrap intervals beside those of FLOPs and "
                    "params. Writes DIR/fidelity.csv, fidelity.json, fidelity.png. "
                    "Resumable: --resume redoes nothing finished.")
    p.add_argument("supernet", metavar="SUPERNET_RUN", help="a supernet training run dir")
    p.add_argument("--data", required=True, help="the prepared data dir it was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="the study's directory")
    p.add_argument("--subnets", type=int, default=16,
                   help="subnets in all, reference subnets included (default 16)")
    p.add_argument("--dense", type=int, default=4,
                   help="random dense subnets among them (default 4)")
    p.add_argument("--subnet-seed", type=int, default=0,
                   help="seeds the choice of subnets (default 0)")
    p.add_argument("--dev-sentences", type=int, default=0,
                   help="dev sentences scored (default 0 = the whole valid split)")
    p.add_argument("--dev-beam", type=int, default=1,
                   help="beam for dev BLEU (default 1 = greedy, as the search)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for BLEU/chrF intervals (default 1000)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads while scoring (default 1, as a search worker)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None,
                   help="standalone training defaults (default demo), as `automoe train`")
    for name, kind, text in _TRIAL_FLAGS:
        p.add_argument(f"--{name}", type=kind, default=None, help=text,
                       metavar="N" if kind is int else "X")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="join this Ray cluster (DIR on a shared filesystem)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in DIR (same supernet, data and settings)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("standalone training options (default: the preset's)")
    add_training_options(g, skip=("validate-every",))
    p.set_defaults(func=_run)


def _retrain_fields(args: argparse.Namespace) -> dict:
    given = trial_settings(args, _TRIAL_FLAGS)
    given["overrides"] = given["overrides"] or {}
    return {k: v for k, v in given.items() if v is not None}


def _run(args: argparse.Namespace) -> int:
    from automoe.fidelity import FidelitySettings, run_fidelity

    settings = FidelitySettings(
        supernet=args.supernet, data=args.data, out=args.out, subnets=args.subnets,
        dense=args.dense, seed=args.subnet_seed, dev_sentences=args.dev_sentences,
        beam=args.dev_beam, n_bootstrap=args.bootstrap, threads=args.threads,
        retrain=_retrain_fields(args), progress=not args.quiet)
    outcome = run_fidelity(settings, resume=args.resume)
    for target in ("loss", "bleu"):
        entry = outcome.report[target]
        parts = [f"{name} {entry[name]['tau']:+.2f} [{entry[name]['tau_lo']:+.2f}, "
                 f"{entry[name]['tau_hi']:+.2f}]"
                 for name in ("inherited", "flops", "params_active", "params_total")]
        diff = entry["inherited_minus_best_proxy"]
        print(f"{target}: Kendall tau vs standalone: {'; '.join(parts)}; inherited - "
              f"{entry['best_proxy']}: {diff['delta']:+.2f} [{diff['lo']:+.2f}, "
              f"{diff['hi']:+.2f}], p = {diff['p_value']:.3g}")
    print(json.dumps({"cpu_seconds_per_subnet": outcome.report["cpu_seconds_per_subnet"]}))
    print(f"wrote {outcome.out / 'fidelity.csv'}, fidelity.json and fidelity.png")
    return 0
