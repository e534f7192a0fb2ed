"""MoE dispatch paths vs a dense FFN of equal active FLOPs, by call size (docs/benchmarks.md).

    python scripts/bench_moe_dispatch.py --threads 1 [--tokens 1 5 10 40 4096] [--repeats 15]
        [--json F]

For each call size (tokens) and two widths (d=512, experts h in 1024/2048/3072; d=128,
h in 256/512/768; 8 experts, top-2, as scripts/bench_supernet.py), forward (no grad):
the index dispatch (`moe_ffn(dispatch="index")`), the static-shape dispatch
(`dispatch="static"`, every expert on every token, gated), the index dispatch on int8
experts (`supernet.quant`, the default int8 kernel) and a dense FFN whose hidden size
equals the tokens' mean active hidden size (the same expert FLOPs), in fp32 and in int8.
Prints per size index/dense, static/dense, static/index, int8 index / int8 dense and
int8 index / fp32 dense, and the weight bytes the
index dispatch reads (every expert a token picked) over the dense FFN's: at a few dozen
tokens every expert is picked, so the MoE reads n/k times the dense layer's weights. The
crossover (the largest size where static/index < 1) is what
`supernet.functional.STATIC_DISPATCH_MAX_TOKENS` should be.
Timing: medians of ``--repeats`` interleaved repeats after one warm-up each, wall clock,
all numbers ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_supernet import medians, moe_weights  # noqa: E402

from supernet.functional import MoEWeights, expert_ffn, moe_ffn, route  # noqa: E402
from supernet.quant import int8_kernel, quantize_expert  # noqa: E402

WIDTHS = ((512, [1024, 2048, 3072, 1024, 2048, 3072, 1024, 2048]),
          (128, [256, 512, 768, 256, 512, 768, 256, 512]))


def bench(d: int, dims: list[int], tokens: int, repeats: int) -> dict:
    """Median forward ms of the three paths on ``tokens`` random tokens, and their ratios."""
    device = torch.device("cpu")
    w = moe_weights(d, dims, 2, device)
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, _, stats = route(x, w, token_mask=None, jitter=0.0, training=False,
                            normalize_gates=False)
        active = sum(c * h for c, h in zip(stats.counts.tolist(), dims, strict=True)) / tokens
        dense = moe_weights(d, [round(active)], 1, device).experts[0]
        dense8 = quantize_expert(dense, 8)
        w8 = MoEWeights(w.router_w, w.router_b, tuple(quantize_expert(e, 8) for e in w.experts),
                        w.top_k)
        times = medians({
            "index": lambda: moe_ffn(x, w, dispatch="index"),
            "static": lambda: moe_ffn(x, w, dispatch="static"),
            "int8_index": lambda: moe_ffn(x, w8, dispatch="index"),
            "dense": lambda: expert_ffn(x, dense, activation_dropout=0.0, training=False),
            "int8_dense": lambda: expert_ffn(x, dense8, activation_dropout=0.0, training=False),
        }, repeats, device)
    read = sum(h for c, h in zip(stats.counts.tolist(), dims, strict=True) if c > 0)
    return {"d": d, "tokens": tokens, **{k: round(v * 1e3, 3) for k, v in times.items()},
            "index_over_dense": times["index"] / times["dense"],
            "static_over_dense": times["static"] / times["dense"],
            "static_over_index": times["static"] / times["index"],
            "int8_index_over_int8_dense": times["int8_index"] / times["int8_dense"],
            "int8_index_over_dense": times["int8_index"] / times["dense"],
            "weight_bytes_index_over_dense": read / round(active)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 5, 10, 20, 40, 4096])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of "
          f"{args.repeats}, int8 kernel {int8_kernel()}", flush=True)
    rows = []
    for d, dims in WIDTHS:
        for tokens in args.tokens:
            row = bench(d, dims, tokens, args.repeats)
            rows.append(row)
            print(f"  d={d} {tokens:5d} tokens: index {row['index']:.3f} ms, static "
                  f"{row['static']:.3f} ms, dense {row['dense']:.3f} ms -> index/dense "
                  f"{row['index_over_dense']:.2f}, static/dense {row['static_over_dense']:.2f}, "
                  f"static/index {row['static_over_index']:.2f}, int8 index / int8 dense "
                  f"{row['int8_index_over_int8_dense']:.2f}, int8 index / dense "
                  f"{row['int8_index_over_dense']:.2f}, weight bytes index/dense "
                  f"{row['weight_bytes_index_over_dense']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                         "int8_kernel": int8_kernel(), "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
