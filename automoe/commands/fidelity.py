"""`automoe fidelity SUPERNET_RUN --data D --out DIR`: does the supernet rank subnets of
equal FLOPs as training them alone does? Inherited vs standalone scores of subnets in FLOPs
bands, Kendall tau within bands and overall with intervals, beside the trivial proxies, the
seed ceiling and the budget check (automoe.fidelity)."""

from __future__ import annotations

import argparse
import json

from automoe.commands.retrain import RETRAIN_FLAGS, trial_settings
from automoe.commands.train import add_training_options
from automoe.training.presets import PRESET_NAMES

# the retrain flags that make sense for a study (the subnets are the study's own)
_TRIAL_FLAGS = [f for f in RETRAIN_FLAGS if f[0] not in ("top", "grace-updates",
                                                         "reduction-factor")]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fidelity", help="inherited vs standalone scores of subnets of equal FLOPs: does the "
                         "supernet rank as training does?",
        description="Choose subnets in --bands FLOPs bands (±--band-width around quantiles of "
                    "the space's FLOPs; per band --dense-per-band dense and the rest MoE, as "
                    "different as possible), score each with the supernet's weights (dev "
                    "loss +- SE, BLEU/chrF with 95%% intervals), train each from scratch with "
                    "--seeds seeds and --double of them with twice the updates, as Ray Tune "
                    "trials (as `automoe retrain`), score the trained models the same way, "
                    "and report Kendall tau within bands and overall, with bootstrap "
                    "intervals, beside params and FLOPs, the seed-to-seed ceiling and the "
                    "budget check. Writes DIR/fidelity.csv, standalone.csv, fidelity.json, "
                    "fidelity.png and per-sentence scores in DIR/sentences/. Resumable: "
                    "--resume redoes nothing finished.")
    p.add_argument("supernet", metavar="SUPERNET_RUN", help="a supernet training run dir")
    p.add_argument("--data", required=True, help="the prepared data dir it was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="the study's directory")
    p.add_argument("--bands", type=int, default=3, help="FLOPs bands (default 3)")
    p.add_argument("--per-band", type=int, default=6, help="subnets per band (default 6)")
    p.add_argument("--dense-per-band", type=int, default=2,
                   help="dense subnets per band, the rest MoE (default 2)")
    p.add_argument("--band-width", type=float, default=0.05,
                   help="relative half-width of a band around its centre (default 0.05)")
    p.add_argument("--seeds", type=int, default=2,
                   help="standalone training seeds per subnet (default 2)")
    p.add_argument("--double", type=int, default=6,
                   help="subnets also trained with twice the updates (default 6)")
    p.add_argument("--subnet-seed", type=int, default=0,
                   help="seeds the choice of subnets (default 0)")
    p.add_argument("--pool", type=int, default=4000,
                   help="random subnets drawn to fill the bands (default 4000)")
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
    p.add_argument("--supernet-moe", default=None, metavar="SUPERNET_RUN",
                   help="few-shot: score the MoE subnets with this supernet (trained on MoE "
                        "subnets only) and the dense ones with SUPERNET_RUN (dense only)")
    p.add_argument("--standalone-from", default=None, metavar="STUDY",
                   help="reuse the trained models' scores of this finished study (same "
                        "subnets, data and training settings) instead of training: compares "
                        "supernet variants on one set of standalone models")
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
        supernet=args.supernet, data=args.data, out=args.out, bands=args.bands,
        per_band=args.per_band, dense_per_band=args.dense_per_band,
        band_width=args.band_width, seeds=args.seeds, double=args.double,
        seed=args.subnet_seed, pool=args.pool, dev_sentences=args.dev_sentences,
        beam=args.dev_beam, n_bootstrap=args.bootstrap, threads=args.threads,
        retrain=_retrain_fields(args), standalone_from=args.standalone_from,
        supernet_moe=args.supernet_moe,
        progress=not args.quiet)
    outcome = run_fidelity(settings, resume=args.resume)
    for target in ("loss", "bleu"):
        entry = outcome.report[target]
        for scope in ("within_band", "overall"):
            parts = [f"{name} {_fmt(entry[scope][name])}"
                     for name in ("inherited", "flops", "params_active", "params_total")]
            print(f"{target}, {scope.replace('_', ' ')}: Kendall tau vs standalone: "
                  f"{'; '.join(parts)}")
        test = entry["within_band"]["inherited_minus_best_param_proxy"]
        print(f"  within band, inherited - {entry['best_param_proxy']}: {_diff(test)}; "
              f"overall, inherited - flops: {_diff(entry['overall']['inherited_minus_flops'])}")
        print(f"  seed ceiling {_fmt(entry['seed_ceiling'])}; budget check "
              f"{_fmt(entry['budget_check']['within_band'])} (passes: "
              f"{entry['budget_check']['passes']})")
    print(json.dumps({"cpu_seconds_per_subnet": outcome.report["cpu_seconds_per_subnet"]}))
    print(f"wrote {outcome.out / 'fidelity.csv'}, standalone.csv, fidelity.json and "
          "fidelity.png")
    return 0


def _fmt(entry: dict | None) -> str:
    if not entry or entry.get("tau") is None or entry["tau"] != entry["tau"]:
        return "undefined"
    return f"{entry['tau']:+.2f} [{entry['tau_lo']:+.2f}, {entry['tau_hi']:+.2f}]"


def _diff(test: dict) -> str:
    if test["p_value"] is None or test["p_value"] != test["p_value"]:
        return f"{test['delta']:+.2f} (untestable)"
    return f"{test['delta']:+.2f} [{test['lo']:+.2f}, {test['hi']:+.2f}], p = {test['p_value']:.3g}"
