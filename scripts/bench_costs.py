"""Cost-model benchmarks on this machine (docs/benchmarks.md, section "Cost").

    python scripts/bench_costs.py [--threads 1] [--subnets 150] [--runs 3] [--repeats 5]
                                  [--clock thread_cpu] [--work-dir runs/bench-costs] [--json F]

1. Latency repeatability: one ``demo`` subnet (the space's largest) measured ``--repeats``
   times with each clock (wall, and the thread's CPU time), interleaved, under the default
   HAT protocol (batch 1, 30 source tokens, beam 5, 30 incremental decoder steps, 5 warm-up
   + 20 timed runs) with ``--threads`` CPU threads. Reported: the coefficient of variation
   (std / mean) of the per-measurement medians across repeats, and the mean CV of the 20
   samples within one measurement.
2. Predictor: a latency dataset of ``--subnets`` random ``demo`` subnets (same protocol but
   2 warm-up + ``--runs`` timed runs each, clock ``--clock``; resumable in ``--work-dir``),
   then every predictor kind (`automoe latency fit --kind auto`: the analytic form, HAT's MLP
   (3x400, 5000 steps) and the ridge least-squares baseline): MAPE, RMSE and Kendall tau on
   the held-out 10 %, against a constant predictor and against ranking by analytic FLOPs.
3. Cost of one count: analytic FLOPs, fvcore, FlopCounterMode (each on the ``demo``
   largest subnet, median of 5 after one warm-up) and one latency measurement (from 1).

The machine may be shared (the printed load average says how busy it was): wall-clock
latencies then drift with other processes' load; the thread's CPU time does not see
time-slicing, so it is the default clock of the dataset here (``--clock wall`` measures
real latency). Ratios within one run are what to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.costs.dataset import (  # noqa: E402
    collect_latency_dataset,
    dataset_features,
    random_model,
)
from automoe.costs.flops import FlopsProtocol, flops  # noqa: E402
from automoe.costs.latency import LatencyProtocol, device_fingerprint, measure_latency  # noqa: E402
from automoe.costs.measured_flops import count_flops_fvcore, count_flops_torch  # noqa: E402
from automoe.costs.metrics import kendall_tau  # noqa: E402
from automoe.costs.predictor import PredictorConfig, fit_predictor  # noqa: E402
from automoe.io_utils import atomic_write_json  # noqa: E402
from search_spaces import load_space  # noqa: E402


def _median_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up (imports, first trace)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_repeatability(space, threads: int, repeats: int) -> dict:
    config = space.largest()
    model = random_model(config, LatencyProtocol().vocab_size)
    out = {"subnet": config.key()}
    clocks = ("wall", "thread_cpu") if threads == 1 else ("wall",)
    results: dict[str, list] = {c: [] for c in clocks}
    for _ in range(repeats):  # interleaved, so both clocks see the same load
        for clock in clocks:
            protocol = LatencyProtocol(threads=threads, clock=clock)
            results[clock].append(measure_latency(model, protocol, subnet_key=config.key()))
    for clock, rs in results.items():
        medians = [r.latency_ms for r in rs]
        out[clock] = {
            "protocol": LatencyProtocol(threads=threads, clock=clock).describe(),
            "medians_ms": medians,
            "cv_across_repeats": statistics.pstdev(medians) / statistics.fmean(medians),
            "mean_cv_within": statistics.fmean(r.stats["cv"] for r in rs),
            "measure_s": statistics.median(r.measure_s for r in rs),
        }
    return out


def bench_predictor(space, threads: int, n: int, runs: int, clock: str, work_dir: Path) -> dict:
    protocol = LatencyProtocol(threads=threads, warmup=2, runs=runs, clock=clock)
    fp = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    from automoe.costs.latency import fingerprint_id

    out = work_dir / f"latency-demo-cpu-{fingerprint_id(fp)}-{protocol.key()}.csv"
    start = time.perf_counter()
    df = collect_latency_dataset(space, n, out, protocol, seed=0)
    collect_s = time.perf_counter() - start
    x, names = dataset_features(df)
    y = df["latency_ms"].to_numpy()
    start = time.perf_counter()
    predictor, report = fit_predictor(x, y, names, PredictorConfig(kind="auto"),
                                      meta={"space": space.name})
    fit_s = time.perf_counter() - start
    # Ranking by analytic FLOPs alone, on the same held-out subnets (a free "predictor").
    from automoe.costs.predictor import split_indices

    cfg = PredictorConfig()
    _, _, test = split_indices(len(y), cfg.val_frac, cfg.test_frac, cfg.seed)
    return {
        "dataset": str(out),
        "subnets": len(df),
        "latency_range_ms": [float(y.min()), float(np.median(y)), float(y.max())],
        "collect_s_this_run": collect_s,
        "fit_s": fit_s,
        "report": report,
        "flops_kendall_tau_test": kendall_tau(df["macs"].to_numpy()[test], y[test]),
        "protocol": protocol.describe(),
    }


def bench_count_cost(space, latency_s: float) -> dict:
    config = space.largest()
    p = FlopsProtocol()
    model = random_model(config, 8000)
    return {
        "analytic_s": _median_time(lambda: flops(config, p)),
        "fvcore_s": _median_time(lambda: count_flops_fvcore(model, p, vocab_size=8000)),
        "flopcounter_s": _median_time(lambda: count_flops_torch(model, p, vocab_size=8000)),
        "latency_measurement_s": latency_s,
        "macs_analytic": flops(config, p).macs,
        "macs_fvcore": count_flops_fvcore(model, p, vocab_size=8000).macs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subnets", type=int, default=150)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per dataset subnet")
    ap.add_argument("--repeats", type=int, default=5, help="repeated measurements of one subnet")
    ap.add_argument("--clock", default="thread_cpu", choices=("wall", "thread_cpu"),
                    help="clock of the predictor's dataset (thread_cpu needs --threads 1)")
    ap.add_argument("--work-dir", default="runs/bench-costs", help="dataset CSV lives here (resumable)")
    ap.add_argument("--json", default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space("demo")
    fp = device_fingerprint("cpu", "float32", args.threads)
    print(f"device: {fp['device_name']} | torch {fp['torch']} | {args.threads} thread(s) | "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    rep = bench_repeatability(space, args.threads, args.repeats)
    print(f"\n1. repeatability ({args.repeats} measurements per clock of demo 'largest', interleaved)")
    for clock in ("wall", "thread_cpu"):
        if clock in rep:
            c = rep[clock]
            print(f"   {clock:10s} medians ms: {', '.join(f'{m:.1f}' for m in c['medians_ms'])} | CV of "
                  f"medians {c['cv_across_repeats']:.3f} | mean CV within {c['mean_cv_within']:.3f}")
    print(f"   protocol: {rep['wall']['protocol']}")

    pred = bench_predictor(space, args.threads, args.subnets, args.runs, args.clock, Path(args.work_dir))
    r = pred["report"]
    print(f"\n2. predictor on {pred['subnets']} demo subnets ({pred['protocol']}); latency "
          f"min/median/max {'/'.join(f'{v:.1f}' for v in pred['latency_range_ms'])} ms; "
          f"collection {pred['collect_s_this_run']:.0f} s this run, fit {pred['fit_s']:.1f} s")
    print(f"   held-out test ({r['n_test']} subnets)   MAPE %   RMSE ms   Kendall tau")
    for kind, m in r["test"].items():
        tau = "n/a" if m["kendall_tau"] is None else f"{m['kendall_tau']:.3f}"
        print(f"   {kind:28s} {m['mape']:7.2f} {m['rmse']:9.2f} {tau:>12s}")
    print(f"   ranking by analytic FLOPs: Kendall tau {pred['flops_kendall_tau_test']:.3f}; "
          f"selected: {r['selected']} (linear ridge {r['linear_ridge']})")

    cost = bench_count_cost(space, rep["wall"]["measure_s"])
    print("\n3. cost of one count (demo 'largest', HAT FLOPs protocol; latency: one measurement of 1.)")
    for key in ("analytic_s", "fvcore_s", "flopcounter_s", "latency_measurement_s"):
        print(f"   {key[:-2]:24s} {cost[key] * 1e3:10.2f} ms  ({cost[key] / cost['analytic_s']:.0f}x analytic)")
    print(f"   MACs analytic {cost['macs_analytic']:.0f} vs fvcore {cost['macs_fvcore']:.0f}")
    if args.json:
        atomic_write_json(args.json, {"fingerprint": fp, "repeatability": rep,
                                      "predictor": pred, "count_cost": cost})
    return 0


if __name__ == "__main__":
    sys.exit(main())
