"""SuperNet benchmarks: overhead of weight sharing and of the MoE dispatch (docs/benchmarks.md).

    python scripts/bench_supernet.py [--device cpu] [--threads N] [--repeats 7] [--json F]

1. supernet vs extracted: for subnets sampled from the ``demo`` space (seeded), a training
   step (zero_grad + forward + cross-entropy + MoE aux + backward, train mode, dropout on)
   on the supernet versus the same step on the subnet's extracted static `Transformer`, and
   an inference forward (eval mode, no grad). Same weights, same inputs, so the same routing
   and FLOPs. Ratio = sum over subnets of median supernet time / sum of median static time.
   Targets: training <= 1.15, inference <= 1.05.
2. MoE layer: 8 experts, top-2, mixed hidden sizes, 4096 tokens, forward (no grad) and
   forward+backward, for the index dispatch (`moe_ffn`), a naive boolean-mask per-expert loop
   (`reference_moe_ffn`) and a dense FFN whose hidden size equals the tokens' observed mean
   active hidden size (``sum_e count_e * h_e / N``, i.e. the same expert FLOPs; the MoE also
   pays its router). Two widths: d=512 (h in 1024/2048/3072) and d=128 (h in 256/512/768).
   Targets: MoE / dense <= 1.5 (CPU); naive / MoE >= 2. The same at ``--decode-tokens`` (40:
   an incremental decoder step of 8 sentences x beam 5), where dispatch overhead, not expert
   matmuls, dominates.

Timing: medians over ``--repeats`` interleaved repeats (A, B, A, B, ...) after one warm-up
each, wall clock (CUDA: synchronised). All numbers are ratios within one run.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces import load_space  # noqa: E402
from search_spaces.files import atomic_write_json  # noqa: E402
from supernet import BOS_ID, EOS_ID, PAD_ID, SuperTransformer  # noqa: E402
from supernet.functional import (  # noqa: E402
    ExpertWeights,
    MoEWeights,
    expert_ffn,
    moe_ffn,
    reference_moe_ffn,
    route,
)


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    return run


def medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
            ) -> dict[str, float]:
    """Median seconds of each function, measured interleaved after one warm-up each."""
    clock = timer(device)
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(clock(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


def batch(vocab: int, b: int, s: int, t: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(EOS_ID + 1, vocab, (b, s), generator=g)
    prev = torch.randint(EOS_ID + 1, vocab, (b, t + 1), generator=g)
    src[:, -1] = EOS_ID
    prev[:, 0] = BOS_ID
    return src.to(device), prev[:, :-1].contiguous().to(device), prev[:, 1:].contiguous().to(device)


def step_functions(supernet, static, config, data, vocab: int) -> dict[str, Callable]:
    """Training step and inference forward of the supernet (for `config`) and of `static`."""
    src, prev, target = data

    def train_step(model, call):
        model.train()
        model.zero_grad(set_to_none=True)
        logits, aux = call()
        loss = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1),
                               ignore_index=PAD_ID)
        (loss + 0.01 * aux.load_balance).backward()

    @torch.no_grad()
    def infer(model, call):
        model.eval()
        call()

    return {
        "super_train": lambda: train_step(supernet, lambda: supernet(src, prev, config)),
        "static_train": lambda: train_step(static, lambda: static(src, prev)),
        "super_infer": lambda: infer(supernet, lambda: supernet(src, prev, config)),
        "static_infer": lambda: infer(static, lambda: static(src, prev)),
    }


def bench_supernet(args: argparse.Namespace, device: torch.device) -> dict:
    space = load_space("demo")
    vocab = 2000
    supernet = SuperTransformer(space, vocab, seed=0).to(device)
    rng = random.Random(args.seed)
    configs = [space.sample(rng) for _ in range(args.subnets)]
    src, prev, target = batch(vocab, 16, 24, 24, device)
    rows = []
    for config in configs:
        static = supernet.extract(config)
        fns = step_functions(supernet, static, config, (src, prev, target), vocab)
        times = medians(fns, args.repeats, device)
        rows.append({"subnet": config.key(), "params_M": static.count_params().total / 1e6,
                     **{k: round(v * 1e3, 2) for k, v in times.items()}})
        print(f"  {config.key()}  {rows[-1]['params_M']:.2f}M params  train "
              f"{times['super_train'] * 1e3:.1f} / {times['static_train'] * 1e3:.1f} ms  infer "
              f"{times['super_infer'] * 1e3:.1f} / {times['static_infer'] * 1e3:.1f} ms",
              flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("super_train", "static_train", "super_infer",
                                                  "static_infer")}
    return {"rows": rows,
            "train_ratio": total["super_train"] / total["static_train"],
            "infer_ratio": total["super_infer"] / total["static_infer"],
            "batch": "16 sentences x 24 source + 24 target tokens, vocab 2000, demo space"}


def moe_weights(d: int, dims: list[int], top_k: int, device: torch.device) -> MoEWeights:
    g = torch.Generator().manual_seed(0)

    def t(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * shape[-1] ** -0.5).to(device).requires_grad_()

    experts = tuple(ExpertWeights(t(h, d), t(h), t(d, h), t(d)) for h in dims)
    return MoEWeights(t(len(dims), d), t(len(dims)), experts, top_k)


def bench_moe(d: int, dims: list[int], tokens: int, repeats: int, device: torch.device) -> dict:
    w = moe_weights(d, dims, 2, device)
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        _, experts, stats = route(x, w, token_mask=None, jitter=0.0, training=False,
                                  normalize_gates=False)
    active_hidden = sum(c * h for c, h in zip(stats.counts.tolist(), dims, strict=True)) / tokens
    dense = moe_weights(d, [round(active_hidden)], 1, device).experts[0]
    xg = x.clone().requires_grad_()

    def dense_fwd():
        return expert_ffn(xg, dense, activation_dropout=0.0, training=False)

    def moe_fwd():
        return moe_ffn(xg, w)[0]

    def naive_fwd():
        return reference_moe_ffn(xg, w)

    def backward(fn):
        return lambda: fn().sum().backward()

    with torch.no_grad():
        fwd = medians({"moe": moe_fwd, "naive": naive_fwd, "dense": dense_fwd}, repeats, device)
    bwd = medians({"moe": backward(moe_fwd), "naive": backward(naive_fwd),
                   "dense": backward(dense_fwd)}, repeats, device)
    out = {"d": d, "expert_dims": dims, "tokens": tokens, "top_k": 2,
           "dense_hidden": round(active_hidden), "counts": stats.counts.tolist()}
    for name, times in (("forward", fwd), ("train", bwd)):
        out[name] = {k: round(v * 1e3, 2) for k, v in times.items()}
        out[name]["moe_over_dense"] = times["moe"] / times["dense"]
        out[name]["naive_over_moe"] = times["naive"] / times["moe"]
        print(f"  d={d} {name}: moe {times['moe'] * 1e3:.1f} ms, dense "
              f"{times['dense'] * 1e3:.1f} ms, naive {times['naive'] * 1e3:.1f} ms -> moe/dense "
              f"{out[name]['moe_over_dense']:.2f}, naive/moe {out[name]['naive_over_moe']:.2f}",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--subnets", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--decode-tokens", type=int, default=40)
    p.add_argument("--only", choices=["supernet", "moe"], default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    header = {"device": f"{device.type} ({name})", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "repeats": args.repeats}
    print(f"device {header['device']}, torch {header['torch']}, {header['threads']} threads, "
          f"medians of {args.repeats}", flush=True)
    results: dict = {"header": header}
    if args.only in (None, "supernet"):
        print("1. supernet vs extracted Transformer (demo space)")
        results["supernet"] = sup = bench_supernet(args, device)
        print(f"  => training step ratio {sup['train_ratio']:.3f} (target <= 1.15), inference "
              f"ratio {sup['infer_ratio']:.3f} (target <= 1.05)")
    if args.only in (None, "moe"):
        print(f"2. MoE layer: 8 experts, top-2, mixed sizes, {args.tokens} tokens")
        wide = (512, [1024, 2048, 3072, 1024, 2048, 3072, 1024, 2048])
        narrow = (128, [256, 512, 768, 256, 512, 768, 256, 512])
        results["moe"] = [bench_moe(d, dims, args.tokens, args.repeats, device)
                          for d, dims in (wide, narrow)]
        print(f"   decode-sized calls: {args.decode_tokens} tokens (e.g. 8 sentences x beam 5)")
        results["moe_decode"] = [bench_moe(d, dims, args.decode_tokens, 3 * args.repeats, device)
                                 for d, dims in (wide, narrow)]
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
