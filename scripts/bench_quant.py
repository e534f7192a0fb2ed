"""Expert kernels at 32/8/4 bits: which one to run a quantized expert with (CPU).

    python scripts/bench_quant.py [--threads 1] [--repeats 21] [--json F]

One expert FFN (``fc2(relu(fc1(x)))``, d=512, h=2048) on
``N`` tokens (5: a decoder step of one sentence x beam 5; 40: 8 sentences x beam 5; 512: an
encoder batch), eval mode, no grad:

- ``fp32``: `supernet.functional.expert_ffn` on the fp32 weights;
- ``int8_dynamic``: `supernet.quant.quantized_expert_ffn` at 8 bits with the ``dynamic``
  kernel (fbgemm ``quantized.linear_dynamic``, prepacked per-channel int8 weights, int8
  activations quantized per call), the default where torch has fbgemm;
- ``int8_weight``: the same with the ``weight_only`` kernel (``torch._weight_int8pack_mm``,
  fp32 activations), the fallback;
- ``int4_sim``: the same at 4 bits (simulated: the dequantized fp32 matrix).

Timing: median wall clock over ``--repeats`` interleaved repeats after one warm-up each;
the output reports ratios to fp32 within the run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from search_spaces.files import atomic_write_json
from supernet import quant
from supernet.functional import ExpertWeights, expert_ffn
from supernet.quant import quantize_expert, quantized_expert_ffn

D, H = 512, 2048
TOKENS = (5, 40, 512)


def _candidates(seed: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    fc1, fc2 = nn.Linear(D, H), nn.Linear(H, D)
    for lin in (fc1, fc2):
        nn.init.normal_(lin.weight, std=lin.in_features ** -0.5, generator=g)
    w = ExpertWeights(fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    q8, q4 = quantize_expert(w, 8), quantize_expert(w, 4)

    def int8(kernel: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            quant.INT8_KERNEL = kernel
            try:
                return quantized_expert_ffn(x, q8)
            finally:
                quant.INT8_KERNEL = None
        return run

    return {
        "fp32": lambda x: expert_ffn(x, w, activation_dropout=0.0, training=False),
        "int8_dynamic": int8("dynamic"),
        "int8_weight": int8("weight_only"),
        "int4_sim": lambda x: quantized_expert_ffn(x, q4),
    }


def bench(repeats: int, seed: int = 0) -> dict:
    fns = _candidates(seed)
    out: dict = {}
    with torch.no_grad():
        for n in TOKENS:
            x = torch.randn(n, D, generator=torch.Generator().manual_seed(n))
            times: dict[str, list[float]] = {k: [] for k in fns}
            for fn in fns.values():
                fn(x)  # warm-up
            for _ in range(repeats):
                for name, fn in fns.items():
                    t = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - t)
            medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            out[str(n)] = {"median_ms": medians,
                           "ratio_to_fp32": {k: v / medians["fp32"] for k, v in medians.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "repeats": args.repeats, "d": D, "h": H,
              "tokens": bench(args.repeats)}
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
