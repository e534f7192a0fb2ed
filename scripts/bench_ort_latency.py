"""Latency of demo subnets in torch vs ONNX Runtime on this CPU: rank agreement and ratio.

    python scripts/bench_ort_latency.py [--n 50] [--seed 0] [--threads 1]
                                        [--subnet MODEL_DIR_OR_SUBNET.json] [--out-dir DIR]

1. Rank agreement: ``--n`` random ``demo`` subnets (`automoe.costs.dataset.sample_unique`,
   seeded; random weights seeded by ``--seed``), each measured in torch and in ONNX Runtime
   (the subnet exported to ONNX in a temporary directory) under the search's latency
   protocol (batch 1, 30 source tokens, beam 5 as rows, 30 cached decoder steps, 2 warm-up
   + 10 timed runs, ``--threads`` intra-op threads). Writes ``DIR/latency-torch-vs-ort.csv``
   (key, FLOPs, latency_ms, latency_ort_ms and their p10/p90/std) and, in
   ``DIR/latency-torch-vs-ort.json``, Kendall tau and Spearman rho between the two
   latencies with 95% bootstrap intervals (`automoe.stats.rank_agreement`; needs n >= 3).
   Measurements go through a latency cache (``DIR/latency_cache.jsonl``): a rerun resumes.
2. With ``--subnet`` (an exported model dir, its ``config.json``, or a subnet JSON):
   per-sentence latency (the protocol's batch is one sentence) of that subnet in torch and
   in ONNX Runtime, measured ``--subnet-repeats`` times alternately with ``--subnet-runs``
   timed runs each; the ratio torch / ONNX Runtime of the pooled medians with a 95%
   bootstrap interval (each runtime's samples resampled), and each repeat's ratio. An
   exported model dir is measured with its trained weights (MoE routing depends on them);
   a bare subnet file with random ones.

The printed load average says how busy the machine was; wall-clock latencies drift with
other processes' load, so compare within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.costs.dataset import random_model, sample_unique  # noqa: E402
from automoe.costs.flops import FlopsProtocol, flops  # noqa: E402
from automoe.costs.latency import (  # noqa: E402
    LatencyProtocol,
    LatencyResult,
    measure_latency,
    protocol_fingerprint,
)
from automoe.costs.latency_cache import LatencyCache  # noqa: E402
from automoe.dev_scoring import ScoringSettings  # noqa: E402
from automoe.io_utils import atomic_write_csv, atomic_write_json  # noqa: E402
from automoe.stats import bootstrap_seed, rank_agreement  # noqa: E402
from search_spaces import load_space  # noqa: E402
from search_spaces.importers import read_subnet  # noqa: E402
from supernet.tokens import DEFAULT_VOCAB_SIZE  # noqa: E402
from supernet.transformer import Transformer  # noqa: E402

RUNTIMES = {"latency": "torch", "latency_ort": "onnxruntime"}  # column prefix -> runtime


def protocols(args: argparse.Namespace, vocab_size: int, runs: int,
              weights: str = "random") -> dict[str, LatencyProtocol]:
    """The search's latency protocol (`ScoringSettings.latency_protocol`) in each runtime,
    with the lengths and run counts of ``args``."""
    settings = ScoringSettings(threads=args.threads, latency_runs=runs,
                               latency_warmup=args.warmup)
    out = {}
    for prefix, runtime in RUNTIMES.items():
        p = settings.latency_protocol(vocab_size, weights, runtime)
        out[prefix] = dataclasses.replace(p, src_len=args.src_len, tgt_len=args.tgt_len,
                                          seed=args.seed)
    return out


def stats_columns(prefix: str, result: LatencyResult) -> dict[str, float]:
    s = result.stats
    return {f"{prefix}_ms": s["median"], f"{prefix}_p10_ms": s["p10"],
            f"{prefix}_p90_ms": s["p90"], f"{prefix}_std_ms": s["std"]}


def bench_rank(args: argparse.Namespace, cache: LatencyCache) -> dict[str, Any]:
    space = load_space("demo")
    configs = sample_unique(space, args.n, args.seed)
    ps = protocols(args, DEFAULT_VOCAB_SIZE, args.runs)
    rows = []
    for i, config in enumerate(configs):
        row: dict[str, Any] = {"key": config.key(), "flops": flops(config, FlopsProtocol()).flops,
                               "max_experts": max(config.encoder_experts + config.decoder_experts)}
        for prefix, protocol in ps.items():
            result, _ = cache.measure(config.key(), protocol, lambda c=config, p=protocol: (
                random_model(c, p.vocab_size, seed=p.seed)))
            row.update(stats_columns(prefix, result))
        row["config"] = config.to_json()
        rows.append(row)
        print(f"   {i + 1}/{len(configs)} {config.key()}: torch {row['latency_ms']:.2f} ms | "
              f"onnxruntime {row['latency_ort_ms']:.2f} ms", flush=True)
    df = pd.DataFrame(rows)
    atomic_write_csv(df, args.out_dir / "latency-torch-vs-ort.csv")
    ratio = df["latency_ms"] / df["latency_ort_ms"]
    out: dict[str, Any] = {
        "n": len(df), "seed": args.seed,
        "protocols": {k: p.describe() for k, p in ps.items()},
        "ratio_torch_over_ort": {"median": float(ratio.median()), "min": float(ratio.min()),
                                 "max": float(ratio.max())},
        "rank_agreement": None,
    }
    if len(df) >= 3:
        agreement = rank_agreement(df["latency_ms"], df["latency_ort_ms"])
        out["rank_agreement"] = agreement.to_dict()
        flops_vs = {prefix: rank_agreement(df["flops"], df[f"{prefix}_ms"]).to_dict()
                    for prefix in RUNTIMES}
        out["flops_rank_agreement"] = flops_vs
    return out


def ratio_interval(a: np.ndarray, b: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of median(a) / median(b), a and b resampled
    independently."""
    rng = np.random.default_rng(bootstrap_seed())
    ratios = [np.median(rng.choice(a, len(a))) / np.median(rng.choice(b, len(b)))
              for _ in range(resamples)]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def bench_subnet(args: argparse.Namespace) -> dict[str, Any]:
    sub = read_subnet(args.subnet)
    if sub.vocab_size is not None:  # an exported model: its trained weights route the MoE
        model = Transformer.load(sub.path.parent)
        weights = f"model {sub.path.parent.name}"
    else:
        model = random_model(sub.config, DEFAULT_VOCAB_SIZE, seed=args.seed)
        weights = "random"
    ps = protocols(args, model.vocab_size, args.subnet_runs, weights)
    samples: dict[str, list[float]] = {prefix: [] for prefix in ps}
    repeats = []
    for _ in range(args.subnet_repeats):  # alternately, so both runtimes see the same load
        medians = {}
        for prefix, protocol in ps.items():
            result = measure_latency(model, protocol, subnet_key=sub.config.key())
            samples[prefix] += result.total_ms
            medians[prefix] = result.latency_ms
        repeats.append(medians["latency"] / medians["latency_ort"])
    torch_ms, ort_ms = np.asarray(samples["latency"]), np.asarray(samples["latency_ort"])
    lo, hi = ratio_interval(torch_ms, ort_ms)
    return {
        "subnet": str(args.subnet), "key": sub.config.key(), "weights": weights,
        "protocols": {k: p.describe() for k, p in ps.items()},
        "samples_per_runtime": len(torch_ms),
        "torch_ms": {"median": float(np.median(torch_ms)),
                     "p10": float(np.percentile(torch_ms, 10)),
                     "p90": float(np.percentile(torch_ms, 90))},
        "ort_ms": {"median": float(np.median(ort_ms)), "p10": float(np.percentile(ort_ms, 10)),
                   "p90": float(np.percentile(ort_ms, 90))},
        "ratio_torch_over_ort": float(np.median(torch_ms) / np.median(ort_ms)),
        "ratio_lo": lo, "ratio_hi": hi, "ratio_per_repeat": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ScoringSettings()
    lp = LatencyProtocol()
    ap.add_argument("--n", type=int, default=50, help="random demo subnets (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="draws subnets, weights and inputs")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, both runtimes")
    ap.add_argument("--runs", type=int, default=d.latency_runs, help="timed runs per subnet")
    ap.add_argument("--warmup", type=int, default=d.latency_warmup, help="warm-up runs")
    ap.add_argument("--src-len", type=int, default=lp.src_len)
    ap.add_argument("--tgt-len", type=int, default=lp.tgt_len)
    ap.add_argument("--subnet", default=None, metavar="PATH",
                    help="also the per-sentence torch/ORT ratio of this model dir or subnet file")
    ap.add_argument("--subnet-runs", type=int, default=20, help="timed runs per repeat")
    ap.add_argument("--subnet-repeats", type=int, default=3, help="alternating repeats")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bench-ort-latency"))
    args = ap.parse_args(argv)
    if args.n < 1 or args.threads < 1:
        raise SystemExit("--n and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fp = protocol_fingerprint(LatencyProtocol(threads=args.threads, runtime="onnxruntime"))
    print(f"device: {fp['device_name']} | torch {fp['torch']} | onnxruntime {fp['onnxruntime']} "
          f"| {args.threads} thread(s) | load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"\n1. {args.n} random demo subnets, torch and ONNX Runtime")
    report: dict[str, Any] = {"fingerprint": fp,
                              "rank": bench_rank(args, LatencyCache(args.out_dir /
                                                                    "latency_cache.jsonl"))}
    rank = report["rank"]
    r = rank["ratio_torch_over_ort"]
    print(f"   torch / ORT latency ratio: median {r['median']:.2f} (min {r['min']:.2f}, "
          f"max {r['max']:.2f})")
    if rank["rank_agreement"] is not None:
        a = rank["rank_agreement"]
        print(f"   Kendall tau {a['tau']:.3f} [{a['tau_lo']:.3f}, {a['tau_hi']:.3f}] | Spearman "
              f"rho {a['rho']:.3f} [{a['rho_lo']:.3f}, {a['rho_hi']:.3f}] (95% bootstrap)")
    else:
        print("   (rank correlation needs at least 3 subnets)")
    if args.subnet:
        s = bench_subnet(args)
        report["subnet"] = s
        print(f"\n2. {s['subnet']} ({s['weights']} weights), per sentence, "
              f"{s['samples_per_runtime']} samples each")
        print(f"   torch {s['torch_ms']['median']:.2f} ms (p10 {s['torch_ms']['p10']:.2f}, p90 "
              f"{s['torch_ms']['p90']:.2f}) | onnxruntime {s['ort_ms']['median']:.2f} ms (p10 "
              f"{s['ort_ms']['p10']:.2f}, p90 {s['ort_ms']['p90']:.2f})")
        print(f"   ratio torch / ORT {s['ratio_torch_over_ort']:.2f} [{s['ratio_lo']:.2f}, "
              f"{s['ratio_hi']:.2f}]; per repeat "
              f"{', '.join(f'{v:.2f}' for v in s['ratio_per_repeat'])}")
    atomic_write_json(args.out_dir / "latency-torch-vs-ort.json", report)
    print(f"\nwrote {args.out_dir / 'latency-torch-vs-ort.csv'} and "
          f"{args.out_dir / 'latency-torch-vs-ort.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
