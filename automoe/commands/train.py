"""`automoe supernet train` and `automoe train`: train the SuperTransformer of a search space,
or a standalone Transformer of one subnet, on a prepared data dir (see docs/training.md).

Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m automoe.cli supernet train ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from automoe.devices import check_device
from automoe.training.presets import PRESET_NAMES, FinalScoring, TrainOptions
from supernet.training.schedule import SCHEDULE_KINDS

# command-line option -> TrainOptions field (all default to None: "not given", so a resumed
# run can tell an explicit value from a preset default)
_OPTIONS: list[tuple[str, type, str]] = [
    ("max-updates", int, "stop after N updates (on --resume: continue up to N)"),
    ("seed", int, "seed of data order, subnet sampling, dropout and initialisation"),
    ("max-tokens", int, "token budget per batch (padded B x max(S, T))"),
    ("global-batches", int, "batches per update over all ranks (accumulated)"),
    ("update-freq", int, "batches per rank per update (overrides --global-batches)"),
    ("schedule", str, "learning-rate schedule"),
    ("lr", float, "peak learning rate (end of warmup)"),
    ("min-lr", float, "final learning rate of the cosine schedule"),
    ("warmup-updates", int, "linear warmup length"),
    ("warmup-init-lr", float, "learning rate of the first update"),
    ("schedule-updates", int, "schedule length (default: --max-updates of the first start)"),
    ("label-smoothing", float, "label smoothing epsilon"),
    ("load-balance-coef", float, "weight of the MoE load-balancing loss"),
    ("z-loss-coef", float, "weight of the router z-loss"),
    ("clip-norm", float, "clip the gradient norm (0 = off)"),
    ("weight-decay", float, "Adam weight decay"),
    ("dropout", float, "dropout"),
    ("attention-dropout", float, "attention dropout"),
    ("activation-dropout", float, "FFN activation dropout"),
    ("validate-every", int, "validate every N updates (and at the end)"),
    ("save-every", int, "write checkpoint_last.pt every N updates (and at the end)"),
    ("keep-last", int, "also keep the last N model-only checkpoints (for averaging)"),
    ("valid-sentences", int, "validate on the first N dev sentences (0 = all)"),
    ("probe-random", int, "random probe subnets validated besides the fixed ones"),
    ("distill-weight", float, "in-place distillation weight under --sampling sandwich: the "
                              "smaller subnets also learn the largest one's soft targets "
                              "(0 = off)"),
    ("router-warmup", int, "supernet: route tokens to uniformly random experts (routers "
                           "frozen) for the first N updates (0 = off)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    sup = subparsers.add_parser(
        "supernet", help="train the weight-sharing SuperTransformer of a search space",
        description="Commands on the weight-sharing SuperTransformer.")
    sub = sup.add_subparsers(dest="supernet_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "train", help="train a supernet on a prepared data dir (resumable, torchrun-ready)",
        description="Train the SuperTransformer of --space on --data: a random subnet per "
                    "update (or the sandwich rule), label-smoothed cross entropy plus MoE "
                    "auxiliary losses, Adam with warmup, periodic validation of fixed probe "
                    "subnets (valid_log.csv) and atomic checkpoints in --out.")
    p.add_argument("--space", help="search space name or YAML file")
    _common(p)
    p.add_argument("--sampling", choices=("uniform", "sandwich"), default=None,
                   help="subnets per update: one random (uniform, HAT) or largest + smallest + "
                        "--sandwich-random random ones (sandwich)")
    p.add_argument("--sandwich-random", type=int, default=None, metavar="K",
                   help="random subnets per update under the sandwich rule")
    p.add_argument("--sample-only", choices=("dense", "moe"), default=None,
                   help="train only dense or only MoE subnets: a few-shot sub-supernet, "
                        "usually started --init-from the one-shot supernet")
    p.add_argument("--init-from", metavar="SUPERNET_RUN", default=None,
                   help="start from this trained supernet's weights (same space and data)")
    p.set_defaults(func=_supernet)

    t = subparsers.add_parser(
        "train", help="train a standalone Transformer of one subnet and score test BLEU",
        description="Train the Transformer of --subnet from scratch (or from the weights it "
                    "inherits from --init-from), keep the best checkpoint by dev loss (or "
                    "average the last N), save --out/model and score test BLEU by beam search.")
    t.add_argument("--subnet", metavar="CONFIG.json",
                   help="the architecture: a SubnetConfig JSON, or an exported model dir / "
                        "its config.json")
    t.add_argument("--init-from", metavar="SUPERNET_RUN",
                   help="a supernet run dir (its checkpoint_last.pt) or checkpoint file")
    _common(t)
    final = FinalScoring()
    t.add_argument("--average-last", type=int, default=final.average_last, metavar="N",
                   help="final weights = mean of the last N update checkpoints (needs "
                        "--keep-last >= N); default: the best checkpoint by dev loss")
    t.add_argument("--beam", type=int, default=final.beam,
                   help=f"beam size for test BLEU (default {final.beam})")
    t.add_argument("--lenpen", type=float, default=final.lenpen,
                   help=f"length penalty for test BLEU (default {final.lenpen})")
    t.add_argument("--test-sentences", type=int, default=final.test_sentences, metavar="N",
                   help="score the first N test sentences (0 = all)")
    t.set_defaults(func=_subnet)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="prepared data dir (automoe data prepare)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run dir to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR (its stored settings; only --max-updates "
                        "may change)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None,
                   help="option defaults: demo (minutes on 2 CPU cores, the default) or wmt "
                        "(AutoMoE/HAT WMT recipe)")
    g = p.add_argument_group("training options (default: the preset's)")
    add_training_options(g)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_training_options(g: argparse._ArgumentGroup, *, skip: tuple[str, ...] = ()) -> None:
    """The `TrainOptions` flags (all default to None = the preset's), except `skip`."""
    for name, kind, text in _OPTIONS:
        if name in skip:
            continue
        if name == "schedule":
            g.add_argument("--schedule", choices=SCHEDULE_KINDS, default=None, help=text)
        else:
            g.add_argument(f"--{name}", type=kind, default=None, help=text,
                           metavar="N" if kind is int else "X")
    g.add_argument("--no-bf16", dest="bf16", action="store_const", const=False, default=None,
                   help="no bf16 autocast on CUDA")
    g.add_argument("--cpu-bf16", dest="cpu_bf16", action="store_const", const=True,
                   default=None, help="bf16 autocast of training passes on the CPU too "
                                      "(fp32 master weights)")
    g.add_argument("--no-cpu-bf16", dest="cpu_bf16", action="store_const", const=False,
                   default=None, help="fp32 training passes on the CPU")
    g.add_argument("--shared-positions", dest="shared_positions", action="store_const",
                   const=True, default=None,
                   help="one sinusoid of the largest width, sliced by every width (HAT)")
    g.add_argument("--per-width-positions", dest="shared_positions", action="store_const",
                   const=False, default=None, help="a sinusoid per embedding width")
    g.add_argument("--pre-ln", dest="normalize_before", action="store_const", const=True,
                   default=None, help="pre-LN layers (the demo presets' choice)")
    g.add_argument("--post-ln", dest="normalize_before", action="store_const", const=False,
                   default=None, help="post-LN layers (HAT/fairseq; the wmt presets' choice)")


def _overrides(args: argparse.Namespace) -> dict:
    names = [n.replace("-", "_") for n, _, _ in _OPTIONS] + [
        "bf16", "normalize_before", "sampling", "sandwich_random", "sample_only", "cpu_bf16",
        "shared_positions"]
    fields = set(TrainOptions.__dataclass_fields__)
    return {n: getattr(args, n) for n in names if n in fields and getattr(args, n, None)
            is not None}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _supernet(args: argparse.Namespace) -> int:
    from automoe.training.runs import finish_distributed, resolve_run, train_supernet

    check_device(args.device)  # before anything is read or written

    settings = resolve_run(args.out, kind="supernet", resume=args.resume, preset=args.preset,
                           overrides=_overrides(args), world_size=_world_size(),
                           data_dir=args.data, space=args.space, init_from=args.init_from)
    try:
        result = train_supernet(settings, args.out, resume=args.resume, device=args.device,
                                progress=not args.quiet)
    finally:
        finish_distributed()
    if _rank() != 0:
        return 0
    print(json.dumps({"run_dir": str(result.run_dir), "updates": result.update,
                      "best_mean_probe_loss": _finite(result.best_loss),
                      "dev_loss": {k: round(v.loss, 4) for k, v in result.last_valid.items()}}))
    return 0


def _subnet(args: argparse.Namespace) -> int:
    from automoe.training.runs import finish_distributed, resolve_run, train_subnet
    from search_spaces.importers import read_subnet

    check_device(args.device)  # before anything is read or written

    subnet = read_subnet(args.subnet).config if args.subnet else None
    settings = resolve_run(args.out, kind="subnet", resume=args.resume, preset=args.preset,
                           overrides=_overrides(args), world_size=_world_size(),
                           data_dir=args.data, subnet=subnet, init_from=args.init_from)
    try:
        summary = train_subnet(settings, args.out, resume=args.resume,
                               average_last=args.average_last, beam=args.beam,
                               lenpen=args.lenpen, test_sentences=args.test_sentences,
                               device=args.device, progress=not args.quiet)
    finally:
        finish_distributed()
    if summary:
        test = summary.get("test", {})
        print(json.dumps({"model_dir": summary["model_dir"], "weights": summary["weights"],
                          "best_dev_loss": _finite(summary["best_dev_loss"]),
                          "test_bleu": test.get("bleu"), "test_chrf": test.get("chrf")}))
    return 0


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
