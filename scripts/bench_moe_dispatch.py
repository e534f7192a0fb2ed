"""MoE dispatch paths vs a dense FFN of equal active FLOPs, by call size, in torch and in
ONNX Runtime (docs/benchmarks.md, SuperNet section 3).

    python scripts/bench_moe_dispatch.py --threads 1 [--tokens 1 5 10 20 40 4096]
        [--repeats 15] [--no-ort] [--json F]

For each call size (tokens) and two widths (d=512, experts h in 1024/2048/3072; d=128,
h in 256/512/768; 8 experts, top-2, as scripts/bench_supernet.py), forward (no grad), in
torch: the index dispatch (`moe_ffn(dispatch="index")`), the gather dispatch
(`dispatch="gather"`, what ONNX export traces), the index dispatch on int8 experts
(`supernet.quant`, the default int8 kernel) and a dense FFN whose hidden size equals the
tokens' mean active hidden size (the same expert FLOPs), in fp32 and in int8. In ONNX Runtime (one session each, the layer exported as `automoe.onnx_export`
exports models): the gather dispatch, the static dispatch that earlier exports used (every
expert on every token, gated, defined here as the baseline) and the dense FFN.
Prints the ratios to the dense FFN of the same runtime, and the weight bytes the
MoE reads (every expert a token picked) over the dense FFN's. The crossover (the largest
size where gather/index < 1) is what `supernet.functional.GATHER_DISPATCH_MAX_TOKENS`
should be.
Timing: medians of ``--repeats`` interleaved repeats after one warm-up each, wall clock,
all numbers ratios within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_supernet import medians, moe_weights  # noqa: E402

from automoe.onnx_export import OPSET  # noqa: E402
from search_spaces.files import atomic_write_json  # noqa: E402
from supernet.functional import MoEWeights, expert_ffn, moe_ffn, route  # noqa: E402
from supernet.quant import int8_kernel, quantize_expert  # noqa: E402

WIDTHS = ((512, [1024, 2048, 3072, 1024, 2048, 3072, 1024, 2048]),
          (128, [256, 512, 768, 256, 512, 768, 256, 512]))


def static_moe(x: torch.Tensor, w: MoEWeights) -> torch.Tensor:
    """The baseline: every expert on all N tokens, scaled by each token's gate for it (0
    where it did not pick it): fixed shapes, n / k times the expert FLOPs. x [N, d]."""
    gates, experts, _ = route(x, w, token_mask=None, jitter=0.0, training=False,
                              normalize_gates=False)
    per_expert = torch.zeros(x.shape[0], len(w.experts)).scatter_add(1, experts, gates)
    out = torch.zeros_like(x)
    for e, ew in enumerate(w.experts):
        out = out + expert_ffn(x, ew, activation_dropout=0.0, training=False) * per_expert[:, e:e + 1]
    return out


class _Layer(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def ort_sessions(fns: dict, d: int, threads: int, workdir: Path) -> dict:
    """One ONNX Runtime session per layer function, exported with a dynamic token count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {}
    for name, fn in fns.items():
        path = workdir / f"{name}.onnx"
        torch.onnx.export(_Layer(fn), (torch.randn(8, d),), str(path), dynamo=True,
                          opset_version=OPSET, verbose=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("tokens", min=1)}})
        sessions[name] = ort.InferenceSession(str(path), options,
                                              providers=["CPUExecutionProvider"])
    return sessions


def time_paths(x: torch.Tensor, w: MoEWeights, w8: MoEWeights, dense, dense8, sessions: dict,
               repeats: int) -> dict[str, float]:
    """Median seconds of every path on the tokens x [N, d]."""
    feed = {"x": x.numpy()}
    return medians({
        "index": lambda: moe_ffn(x, w, dispatch="index"),
        "gather": lambda: moe_ffn(x, w, dispatch="gather"),
        "int8_index": lambda: moe_ffn(x, w8, dispatch="index"),
        "dense": lambda: expert_ffn(x, dense, activation_dropout=0.0, training=False),
        "int8_dense": lambda: expert_ffn(x, dense8, activation_dropout=0.0, training=False),
        **{name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()},
    }, repeats, torch.device("cpu"))


def bench(d: int, dims: list[int], sizes: list[int], repeats: int, threads: int,
          use_ort: bool) -> list[dict]:
    """Median forward ms of every path at each call size, and their ratios."""
    device = torch.device("cpu")
    w = moe_weights(d, dims, 2, device)
    w8 = MoEWeights(w.router_w, w.router_b, tuple(quantize_expert(e, 8) for e in w.experts),
                    w.top_k)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        moe_sessions = ort_sessions({
            "ort_gather": lambda x: moe_ffn(x, w, dispatch="gather")[0],
            "ort_static": lambda x: static_moe(x, w)}, d, threads, Path(tmp)) if use_ort else {}
        for tokens in sizes:
            x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(tokens))
            _, _, stats = route(x, w, token_mask=None, jitter=0.0, training=False,
                                normalize_gates=False)
            counts = stats.counts.tolist()
            active = round(sum(c * h for c, h in zip(counts, dims, strict=True)) / tokens)
            dense = moe_weights(d, [active], 1, device).experts[0]
            sessions = dict(moe_sessions)
            if use_ort:
                sessions |= ort_sessions({"ort_dense": lambda x, e=dense: expert_ffn(
                    x, e, activation_dropout=0.0, training=False)}, d, threads, Path(tmp))
            times = time_paths(x, w, w8, dense, quantize_expert(dense, 8), sessions, repeats)
            read = sum(h for c, h in zip(counts, dims, strict=True) if c > 0)
            row = {"d": d, "tokens": tokens, **{k: round(v * 1e3, 3) for k, v in times.items()},
                   "index_over_dense": times["index"] / times["dense"],
                   "gather_over_dense": times["gather"] / times["dense"],
                   "gather_over_index": times["gather"] / times["index"],
                   "int8_index_over_int8_dense": times["int8_index"] / times["int8_dense"],
                   "int8_index_over_dense": times["int8_index"] / times["dense"],
                   "weight_bytes_moe_over_dense": read / active}
            if use_ort:
                row |= {"ort_gather_over_ort_dense": times["ort_gather"] / times["ort_dense"],
                        "ort_static_over_ort_dense": times["ort_static"] / times["ort_dense"]}
            rows.append(row)
            print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in row.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 5, 10, 20, 40, 4096])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-ort", action="store_true", help="torch only (no onnxruntime)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of "
          f"{args.repeats}, int8 kernel {int8_kernel()}", flush=True)
    rows = [row for d, dims in WIDTHS
            for row in bench(d, dims, args.tokens, args.repeats, args.threads, not args.no_ort)]
    if args.json:
        atomic_write_json(args.json, {"torch": torch.__version__, "threads": args.threads,
                                      "int8_kernel": int8_kernel(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
