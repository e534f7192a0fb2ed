"""Training throughput benchmarks (numbers go to docs/benchmarks.md, section Training).

    python scripts/bench_training.py [--space demo] [--updates 8] [--repeats 3]
                                     [--max-tokens 2048] [--threads 2] [--json FILE]
                                     [--part all|overhead|ddp]

1. loop overhead: target tokens/s of `supernet.training.loop.train` on the SuperTransformer,
   sampling the *largest* subnet every update, versus a plain loop (forward, label-smoothed loss + MoE
   aux, backward, Adam step; nothing else) on the extracted largest `Transformer`. Same
   batches (TokenBatcher, same seed), same weights, same FLOPs, so the ratio is the cost of
   weight sharing (slicing) plus everything the real loop does (per-pass seeding, stats,
   logs, progress bar). Target >= 0.85. Uniform sampling of random subnets is shown too
   (smaller subnets on average, so it is faster; not part of the ratio).
2. DDP scaling on 2 CPU processes (gloo, 1 thread each) versus one process (1 and 2 threads)
   with the same global batch (2 token-budget batches per update, accumulated in the single
   process), uniform sampling: tokens/s of the whole update including the gradient
   all-reduce, measured on rank 0; plus the time of one all-reduce of the whole supernet's
   gradient (what an update that touches every parameter pays).

Data: a synthetic corpus (random ids, vocab 8000, lengths 8-40) held in memory. Timings are
medians of interleaved repeats (A, B, A, B, ...) after one warm-up run each; every number
is a ratio within one run on the device printed with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.data import TokenBatcher  # noqa: E402
from automoe.data.store import Ragged  # noqa: E402
from automoe.io_utils import atomic_write_json, read_json  # noqa: E402
from search_spaces import load_space  # noqa: E402
from supernet import SuperTransformer  # noqa: E402
from supernet.training.config import TrainConfig  # noqa: E402
from supernet.training.distributed import DistInfo, sync_gradients  # noqa: E402
from supernet.training.loop import train  # noqa: E402
from supernet.training.loss import label_smoothed_nll  # noqa: E402
from supernet.training.sampling import SamplingRule  # noqa: E402
from supernet.training.schedule import LRSchedule  # noqa: E402

VOCAB = 8000


def corpus(n: int = 3000, seed: int = 0) -> tuple[Ragged, Ragged]:
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        length = int(rng.integers(8, 41))
        src.append(rng.integers(4, VOCAB, length))
        tgt.append(rng.integers(4, VOCAB, max(4, length + int(rng.integers(-3, 4)))))
    return Ragged.from_lists(src), Ragged.from_lists(tgt)


class LargestOnly:
    """A space whose every draw is its largest subnet."""

    def __init__(self, space) -> None:
        self.space = space

    def sample(self, rng):
        return self.space.largest()

    def largest(self):
        return self.space.largest()

    def smallest(self):
        return self.space.smallest()


def _config(updates: int, update_freq: int = 1) -> TrainConfig:
    return TrainConfig(max_updates=updates, schedule=LRSchedule("constant", max_lr=1e-4),
                       sampling=SamplingRule("uniform"), update_freq=update_freq)


def run_loop(space, data, args, *, largest: bool, info: DistInfo | None = None,
             update_freq: int = 1) -> float:
    """Tokens/s of `train` (validation and checkpoint time excluded)."""
    info = info or DistInfo()
    model = SuperTransformer(space, VOCAB, seed=1)
    batcher = TokenBatcher(*data, max_tokens=args.max_tokens, seed=2, rank=info.rank,
                           world_size=info.world_size)
    valid = [next(iter(TokenBatcher(*data, max_tokens=256, seed=3, shuffle=False)))]
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, _config(args.updates, update_freq), run_dir=tmp,
                       train_batches=batcher, valid_batches=valid, identity={"kind": "bench"},
                       probes={"largest": space.largest()},
                       space=LargestOnly(space) if largest else space, info=info,
                       progress=False)
    return result.tokens / result.train_seconds


def run_plain(space, data, args) -> float:
    """Tokens/s of a minimal loop on the extracted largest Transformer."""
    model = SuperTransformer(space, VOCAB, seed=1).extract(space.largest()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    batches = iter(TokenBatcher(*data, max_tokens=args.max_tokens, seed=2))
    tokens, seconds = 0, 0.0
    for _ in range(args.updates):
        src, prev, target = next(batches)[:3]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, aux = model(src, prev)
        out = label_smoothed_nll(logits, target, epsilon=0.1)
        ((out.loss + out.ntokens * 0.01 * aux.load_balance) / out.ntokens).backward()
        opt.step()
        seconds += time.perf_counter() - start
        tokens += out.ntokens
    return tokens / seconds


def overhead(space, data, args) -> dict:
    variants = {"supernet loop, largest": lambda: run_loop(space, data, args, largest=True),
                "plain loop, extracted largest": lambda: run_plain(space, data, args),
                "supernet loop, uniform sampling": lambda: run_loop(space, data, args,
                                                                    largest=False)}
    for fn in variants.values():  # warm-up (first-call costs)
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.repeats):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            samples[name].append(variants[name]())
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"tokens_per_s": med, "samples": samples,
            "ratio_supernet_over_plain": med["supernet loop, largest"]
            / med["plain loop, extracted largest"]}


def _ddp_worker(rank: int, world_size: int, port: int, threads: int, update_freq: int,
                args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(threads)
    info = DistInfo(rank, world_size, rank)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size)
    try:
        space = load_space(args.space)
        tps = run_loop(space, corpus(), args, largest=False, info=info, update_freq=update_freq)
        sync_ms = None
        if world_size > 1:  # the cost of one all-reduce of the whole supernet's gradient
            params = list(SuperTransformer(space, VOCAB, seed=1).parameters())
            for p in params:
                p.grad = torch.zeros_like(p)
            times = []
            for _ in range(5):
                dist.barrier()
                start = time.perf_counter()
                sync_gradients(params, info)
                times.append(time.perf_counter() - start)
            sync_ms = 1000 * statistics.median(times)
        if rank == 0:
            atomic_write_json(out, {"tps": tps, "sync_ms": sync_ms})
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _spawn(world_size: int, threads: int, update_freq: int, args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tps.json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.start_processes(_ddp_worker, args=(world_size, port, threads, update_freq, args, out),
                           nprocs=world_size, start_method="spawn")
        return read_json(out)


def scaling(args) -> dict:
    setups = {"1 process x 1 thread (accumulate 2)": (1, 1, 2),
              "1 process x 2 threads (accumulate 2)": (1, 2, 2),
              "2 processes x 1 thread (gloo)": (2, 1, 1)}
    samples: dict[str, list[float]] = {k: [] for k in setups}
    sync: list[float] = []
    for rep in range(args.repeats):
        order = list(setups) if rep % 2 == 0 else list(reversed(setups))
        for name in order:
            got = _spawn(*setups[name], args)
            samples[name].append(got["tps"])
            if got["sync_ms"] is not None:
                sync.append(got["sync_ms"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    two = med["2 processes x 1 thread (gloo)"]
    n_params = sum(p.numel() for p in SuperTransformer(load_space(args.space), VOCAB).parameters())
    return {"tokens_per_s": med, "samples": samples, "params": n_params,
            "full_gradient_all_reduce_ms": statistics.median(sync),
            "speedup_vs_1x1": two / med["1 process x 1 thread (accumulate 2)"],
            "speedup_vs_1x2": two / med["1 process x 2 threads (accumulate 2)"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="demo")
    p.add_argument("--updates", type=int, default=8, help="updates per measured run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2, help="threads for part 1")
    p.add_argument("--part", choices=("all", "overhead", "ddp"), default="all")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    device = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print(f"# device: CPU ({device})")
    print(f"# space {args.space}, largest {space.largest().key()}, max_tokens {args.max_tokens}, "
          f"{args.updates} updates x {args.repeats} repeats (medians)")
    res = {"device": device, "space": args.space, "max_tokens": args.max_tokens,
           "updates": args.updates, "repeats": args.repeats}
    if args.part in ("all", "overhead"):
        res["overhead"] = overhead(space, corpus(), args)
        print(f"\n## loop overhead ({args.threads} threads)")
        for name, tps in res["overhead"]["tokens_per_s"].items():
            print(f"{name:34s} {tps:10,.0f} target tok/s")
        print(f"ratio supernet / plain: {res['overhead']['ratio_supernet_over_plain']:.3f} "
              "(target >= 0.85)")
    if args.part in ("all", "ddp"):
        res["ddp"] = scaling(args)
        print("\n## DDP scaling (uniform sampling, global batch = 2 batches per update)")
        for name, tps in res["ddp"]["tokens_per_s"].items():
            print(f"{name:38s} {tps:10,.0f} target tok/s")
        print(f"speedup of 2 processes: {res['ddp']['speedup_vs_1x1']:.2f}x vs 1x1 thread, "
              f"{res['ddp']['speedup_vs_1x2']:.2f}x vs 1x2 threads")
        print(f"all-reduce of the full gradient ({res['ddp']['params'] / 1e6:.1f}M fp32 "
              f"params, gloo): {res['ddp']['full_gradient_all_reduce_ms']:.0f} ms")
    res["load_average_after"] = os.getloadavg()[0]
    if args.json:
        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
