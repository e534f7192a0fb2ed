"""Benchmarks of the distributed search on a trained supernet (docs/benchmarks.md, Search).

1. Throughput: the same fixed set of subnets scored by the serial evaluator and by Ray
   pools of 1 and 2 actors (1 torch thread each): candidates per minute, pool start-up
   time, and the scaling efficiency ``rate(2) / (2 * rate(1))``. Timings are ratios within
   one run on one machine; the device and its load are printed with them.
2. Search quality at an equal number of evaluations: NSGA-II, HAT's GA and random search,
   each seed run until ``--budget`` distinct subnets are scored; the hypervolume of the
   first ``--budget`` evaluations (in evaluation order) on objectives normalised by the
   range seen over all runs (reference 1.1 per objective, minimisation). Scores are
   deterministic, so they are cached across runs and the pool scores each subnet once.

    python scripts/bench_search.py --supernet runs/demo/supernet --data runs/demo/data \
        --json runs/bench_search.json
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages, not stale installs

from automoe.checkpoints import read_supernet
from automoe.dev_scoring import ScoringSettings
from automoe.io_utils import atomic_write_json
from automoe.search.evaluators import RayEvaluator, SerialEvaluator
from automoe.search.objectives import parse_objectives
from automoe.search.run import SearchSettings, build_algorithm
from automoe.search.scoring import CandidateScorerFactory, CheapCosts
from evolution import hypervolume, step


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _burn(iterations: int) -> float:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
    began = time.perf_counter()
    for _ in range(iterations):
        a @ a
    return time.perf_counter() - began


def machine_scaling(iterations: int = 400) -> float:
    """The control: throughput of 2 concurrent single-threaded torch processes over 1 (2.0
    on two idle cores; less when other jobs hold the cores)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_burn, [10, 10])  # start-up and imports outside the timing
        began = time.perf_counter()
        pool.apply(_burn, (iterations,))
        one = time.perf_counter() - began
        began = time.perf_counter()
        pool.map(_burn, [iterations, iterations])
        two = time.perf_counter() - began
    return 2 * one / two


def throughput(factory, state, configs, workers_list, repeats) -> list[dict]:
    """Candidates per minute of each evaluator, medians of interleaved repeats (all pools
    exist at once and idle actors use no CPU, so drifting machine load hits all alike)."""
    evaluators = {"serial, 1 thread": SerialEvaluator(factory, state, threads=1)}
    startup = {"serial, 1 thread": 0.0}
    for workers in workers_list:
        name = f"ray, {workers} actor(s) x 1 thread"
        began = time.perf_counter()
        evaluators[name] = RayEvaluator(factory, state, workers=workers, threads_per_worker=1)
        startup[name] = time.perf_counter() - began
        evaluators[name].evaluate(configs[:workers])  # first call of each actor
    seconds: dict[str, list[float]] = {name: [] for name in evaluators}
    loads: list[str] = []
    control: list[float] = []
    for _ in range(repeats):
        control.append(machine_scaling())
        for name, evaluator in evaluators.items():
            began = time.perf_counter()
            evaluator.evaluate(configs)
            seconds[name].append(time.perf_counter() - began)
        loads.append(_load())
    rows = []
    for name, evaluator in evaluators.items():
        median = statistics.median(seconds[name])
        rows.append({"evaluator": name, "workers": getattr(evaluator, "workers", 0),
                     "startup_s": startup[name], "seconds": seconds[name],
                     "per_min": 60 * len(configs) / median, "loads": loads})
        evaluator.close()
    by_workers = {r["workers"]: r for r in rows}
    if 1 in by_workers and 2 in by_workers:
        speedup = by_workers[2]["per_min"] / by_workers[1]["per_min"]
        by_workers[2]["speedup"] = speedup
        by_workers[2]["scaling_efficiency"] = speedup / 2
        by_workers[2]["machine_speedup"] = statistics.median(control)
        by_workers[2]["machine_speedups"] = control
        by_workers[2]["relative_efficiency"] = speedup / statistics.median(control)
    return rows


def search_quality(args, space, costs, pool, objectives) -> dict:
    cache: dict[str, dict[str, float]] = {}
    scored = {"n": 0}

    def evaluate(configs):
        todo = [c for c in configs if c.key() not in cache]
        for c, e in zip(todo, pool.evaluate(todo) if todo else [], strict=True):
            cache[c.key()] = dict(e.metrics)
        scored["n"] += len(todo)
        return [cache[c.key()] for c in configs]

    runs = []
    for algorithm in args.algorithms:
        for seed in args.seeds:
            settings = SearchSettings(supernet=args.supernet, data=args.data, out="-",
                                      objectives=tuple(args.objectives.split(",")),
                                      algorithm=algorithm, population=args.population,
                                      generations=10_000, seed=seed)
            algo = build_algorithm(settings, space, objectives, (), costs.pre_filter)
            state = algo.init(seed)
            began = time.perf_counter()
            while state.evaluations < args.budget:
                step(algo, state, evaluate)
            entries = list(state.archive.values())[: args.budget]
            runs.append({"algorithm": algorithm, "seed": seed,
                         "generations": state.generation,
                         "points": [[e.metrics[o.name] for o in objectives] for e in entries],
                         "seconds": time.perf_counter() - began})
            print(f"  {algorithm:7s} seed {seed}: {state.generation} generations "
                  f"({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    # Normalise over everything seen, in minimisation space; reference 1.1.
    signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    allpts = np.concatenate([np.array(r["points"]) for r in runs]) * signs
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    marks = sorted({args.budget // 4, args.budget // 2, args.budget})
    for r in runs:
        pts = (np.array(r["points"]) * signs - lo) / span
        r["hv"] = {str(m): hypervolume(pts[:m], [1.1] * len(objectives)) for m in marks}
    summary = {}
    for algorithm in args.algorithms:
        hvs = {m: [r["hv"][str(m)] for r in runs if r["algorithm"] == algorithm] for m in marks}
        summary[algorithm] = {str(m): {"mean": statistics.mean(v),
                                       "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                                       "per_seed": v} for m, v in hvs.items()}
    return {"runs": [{k: v for k, v in r.items() if k != "points"} for r in runs],
            "summary": summary, "distinct_scored": scored["n"], "marks": marks,
            "normalisation": {"min": lo.tolist(), "max": hi.tolist()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--json", default=None, help="write all numbers here")
    p.add_argument("--dev-sentences", type=int, default=64)
    p.add_argument("--candidates", type=int, default=16, help="subnets in the throughput set")
    p.add_argument("--repeats", type=int, default=3, help="interleaved throughput repeats")
    p.add_argument("--objectives", default="loss,flops")
    p.add_argument("--algorithms", nargs="+", default=["nsga2", "hat", "random"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=96, help="evaluations per search run")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--skip", choices=["throughput", "quality"], default=None)
    args = p.parse_args(argv)

    import ray
    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as run_search (see evaluators.py)
    checkpoint = read_supernet(args.supernet)
    space, state = checkpoint.space, checkpoint.state
    costs = CheapCosts(checkpoint)
    objectives = parse_objectives(args.objectives)
    report: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "ray": ray.__version__},
        "supernet": checkpoint.identity(), "dev_sentences": args.dev_sentences,
    }
    # 3 logical CPUs: the 1-actor and the 2-actor pool coexist (only one works at a time).
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        if args.skip != "throughput":
            rng = random.Random(0)
            configs, seen = [], set()
            while len(configs) < args.candidates:
                c = space.sample(rng)
                if c.key() not in seen:
                    seen.add(c.key())
                    configs.append(c)
            factory = CandidateScorerFactory.of(
                checkpoint, args.data, ScoringSettings(dev_sentences=args.dev_sentences,
                                                       bleu=True))
            print("throughput (loss + greedy BLEU per candidate)...", file=sys.stderr)
            report["throughput"] = throughput(factory, state, configs, [1, 2], args.repeats)
            for r in report["throughput"]:
                print(f"  {r['evaluator']:28s} {r['per_min']:7.1f} candidates/min "
                      f"(start-up {r['startup_s']:.1f} s, loads {r['loads']})"
                      + (f", speedup {r['speedup']:.2f} (efficiency {r['scaling_efficiency']:.2f}"
                         f"; 2 plain processes: {r['machine_speedup']:.2f})"
                         if "speedup" in r else ""), file=sys.stderr)
        if args.skip != "quality":
            needs_bleu = any(o.name == "bleu" for o in objectives)
            factory = CandidateScorerFactory.of(
                checkpoint, args.data, ScoringSettings(dev_sentences=args.dev_sentences,
                                                       bleu=needs_bleu))
            print(f"search quality ({args.objectives}, budget {args.budget})...",
                  file=sys.stderr)
            with RayEvaluator(factory, state, workers=2) as pool:
                report["quality"] = search_quality(args, space, costs, pool, objectives)
            for algorithm, by_mark in report["quality"]["summary"].items():
                final = by_mark[str(args.budget)]
                print(f"  {algorithm:7s} HV@{args.budget} {final['mean']:.4f} ± "
                      f"{final['std']:.4f}  per seed {[round(v, 4) for v in final['per_seed']]}",
                      file=sys.stderr)
    finally:
        ray.shutdown()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
