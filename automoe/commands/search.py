"""`automoe search`: evolutionary search over a trained supernet, scored on Ray actors."""

from __future__ import annotations

import argparse

from automoe.search.objectives import DEFAULT_OBJECTIVES, METRICS
from automoe.search.settings import SearchSettings, resume_settings

# Flags that default to SearchSettings' values; None means "not given" (matters on resume).
_DEFAULTS = {f: getattr(SearchSettings, f) for f in (
    "algorithm", "generations", "population", "seed", "workers", "threads_per_worker",
    "dev_sentences", "beam", "latency_runs", "latency_warmup")}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="search a trained supernet for Pareto-optimal subnets (BLEU vs FLOPs vs latency)",
        description=(
            "Evolutionary search (NSGA-II, HAT's GA or random search) over the subnets of a "
            "trained supernet. Candidates are scored on a pool of long-lived Ray actors that "
            "each hold the supernet once; latency is measured on an exclusive device. Writes "
            "RUN_DIR/candidates.csv, pareto.csv, search.json and a checkpoint per generation "
            "(resume with --resume RUN_DIR)."
        ),
    )
    p.add_argument("--supernet", metavar="SUPERNET_RUN", help="supernet training run dir")
    p.add_argument("--data", metavar="DIR", help="prepared data dir (its valid split is scored)")
    p.add_argument("--out", metavar="RUN_DIR", help="where to write the search run")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue a search from its last checkpoint (RUN_DIR or --out)")
    p.add_argument("--objectives", default=None,
                   help=f"comma-separated, from {sorted(METRICS)} "
                        f"(default: {','.join(DEFAULT_OBJECTIVES)})")
    p.add_argument("--constraint", action="append", default=None, metavar="BOUND",
                   help="a hard bound, e.g. 'latency<=80ms', 'flops<=2e9', 'bleu>=20' (repeat)")
    p.add_argument("--space", default=None, metavar="NAME|FILE",
                   help="search this space instead of the supernet's own; it may differ only "
                        "in expert_bits (e.g. demo_q on a demo supernet)")
    p.add_argument("--algorithm", choices=["nsga2", "hat", "random"], default=None,
                   help=f"search algorithm (default: {_DEFAULTS['algorithm']})")
    p.add_argument("--generations", type=int, default=None,
                   help=f"generations, the initial population included "
                        f"(default: {_DEFAULTS['generations']}; may grow on --resume)")
    p.add_argument("--population", type=int, default=None,
                   help=f"population size (default: {_DEFAULTS['population']})")
    p.add_argument("--seed", type=int, default=None, help=f"default: {_DEFAULTS['seed']}")
    p.add_argument("--workers", type=int, default=None,
                   help=f"Ray actors (default: {_DEFAULTS['workers']}; 0 = serial, no Ray)")
    p.add_argument("--threads-per-worker", type=int, default=None,
                   help=f"CPUs and torch threads per actor (default: {_DEFAULTS['threads_per_worker']})")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where actors score and measure latency (cuda: one GPU per actor)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="join this Ray cluster instead of starting a local one")
    p.add_argument("--dev-sentences", type=int, default=None,
                   help="dev sentences scored: the first N of the valid split (default: 0 = all)")
    p.add_argument("--task", default=None, metavar="LANG",
                   help="multilingual data: score target language LANG's dev pairs and cost "
                        "the model that serves it (default: all tasks, the routed model)")
    p.add_argument("--beam", type=int, default=None,
                   help=f"beam for BLEU decoding (default: {_DEFAULTS['beam']} = greedy)")
    p.add_argument("--latency-runs", type=int, default=None,
                   help=f"timed runs per latency (default: {_DEFAULTS['latency_runs']})")
    p.add_argument("--latency-warmup", type=int, default=None,
                   help=f"warm-up runs per latency (default: {_DEFAULTS['latency_warmup']})")
    p.add_argument("--latency-cache", default=None, metavar="FILE.jsonl",
                   help="latency measurements shared between searches and resumes (default: "
                        "latency_cache.jsonl beside the supernet checkpoint; 'none': no cache)")
    p.add_argument("--predictor", default=None, metavar="DIR",
                   help="latency predictor dir (for the 'predicted_latency' metric)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", default=None,
                   help="do not score the space's reference subnets into baselines.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    """Builds SearchSettings; on resume only the given flags are passed on."""
    out = args.resume if isinstance(args.resume, str) else args.out
    if args.resume and args.out and isinstance(args.resume, str) and args.out != args.resume:
        raise ValueError(f"--resume {args.resume} and --out {args.out} name different runs")
    if not out:
        raise ValueError("--out RUN_DIR is required (or --resume RUN_DIR)")
    values = {
        name: getattr(args, name)
        for name in (*_DEFAULTS, "supernet", "data", "ray_address", "predictor", "device",
                     "baselines", "latency_cache", "space", "task")
        if getattr(args, name) is not None
    }
    if args.objectives is not None:
        values["objectives"] = tuple(s for s in args.objectives.split(",") if s.strip())
    if args.constraint is not None:
        values["constraints"] = tuple(args.constraint)
    if args.resume:
        return resume_settings(out, progress=not args.quiet, **values)
    missing = [f"--{n}" for n in ("supernet", "data") if n not in values]
    if missing:
        raise ValueError(f"missing {' and '.join(missing)} (required for a new search)")
    return SearchSettings(out=out, progress=not args.quiet, **values)


def _run(args: argparse.Namespace) -> int:
    from automoe.search.run import run_search  # the run and its tables load pandas

    outcome = run_search(settings_from_args(args))
    hv = "-" if outcome.hypervolume is None else f"{outcome.hypervolume:.6g}"
    print(f"{outcome.run_dir}: {outcome.generations} generations, {outcome.evaluations} "
          f"candidates scored, front {outcome.front_size}, hypervolume {hv} "
          f"({outcome.seconds:.1f} s)")
    print(f"  {outcome.run_dir / 'pareto.csv'}")
    print(f"  {outcome.run_dir / 'candidates.csv'}")
    if (outcome.run_dir / "baselines.csv").is_file():
        print(f"  {outcome.run_dir / 'baselines.csv'}")
    return 0
