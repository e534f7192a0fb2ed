"""Inherited dev loss (and latency) of the same subnets with every expert at 32, 8 and 4 bits.

    python scripts/bench_quant_loss.py --supernet runs/demo/supernet --data runs/demo/data \
        [--subnets 8] [--seed 0] [--dev-sentences 0] [--latency-runs 0] \
        [--runtime torch|onnxruntime] [--json F]

The supernet (any trained checkpoint; its space need not have ``expert_bits``) scores, in
eval mode, its space's largest subnet and ``--subnets`` seeded samples, each three times:
all experts fp32, all int8 and all int4 (post-training quantization of the expert slices,
`supernet.quant`; attention, embeddings and routers fp32). Dev loss as the search computes
it (`automoe.dev_scoring.DevScorer`, loss only), with its standard error over sentences.
With ``--latency-runs N`` also each subnet's latency at each precision under the search's
protocol (`automoe.costs.latency`: 1 thread, batch 1, 30 source tokens, beam 5 as rows, 30
cached decoder steps, 2 warm-up + N timed runs, median), on the model extracted from the
supernet, so its experts run the int8 kernel in use (`supernet.quant.int8_kernel`); with
``--runtime onnxruntime`` that model exported to ONNX and run in ONNX Runtime (quantized
experts as ONNX's dynamic int8 arithmetic, `automoe.onnx_export`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random

from automoe.checkpoints import read_supernet
from automoe.costs.latency import RUNTIMES, LatencyProtocol
from automoe.costs.subnet_latency import measure_subnet
from automoe.dev_scoring import DevScorer, ScoringSettings
from search_spaces.files import atomic_write_json
from supernet.quant import int8_kernel

BITS = (32, 8, 4)


def _at(config, bits: int):
    return dataclasses.replace(
        config,
        encoder_expert_bits=tuple((bits,) * len(d) for d in config.encoder_expert_dims),
        decoder_expert_bits=tuple((bits,) * len(d) for d in config.decoder_expert_dims))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", required=True, help="supernet run dir or checkpoint file")
    p.add_argument("--data", required=True, help="prepared data dir (its valid split)")
    p.add_argument("--subnets", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dev-sentences", type=int, default=0, help="0: the whole valid split")
    p.add_argument("--latency-runs", type=int, default=0,
                   help="also time each subnet at each precision (0: loss only)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="where latency is measured (default: torch)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    checkpoint = read_supernet(args.supernet)
    model, space = checkpoint.build_model(), checkpoint.space
    # the dev loss uses the training loss's epsilon, as the search's scorer does
    scorer = DevScorer(args.data, ScoringSettings(dev_sentences=args.dev_sentences, bleu=False),
                       label_smoothing=checkpoint.label_smoothing)
    protocol = LatencyProtocol(threads=1, warmup=2, runs=max(args.latency_runs, 1),
                               vocab_size=model.vocab_size, weights=f"supernet:{args.supernet}",
                               runtime=args.runtime)
    rng = random.Random(args.seed)
    configs = [space.largest()] + [space.sample(rng) for _ in range(args.subnets)]
    rows = []
    for config in configs:
        row = {"key": config.key()}
        for bits in BITS:
            metrics = scorer.score(model, _at(config, bits))
            row[f"loss_{bits}"], row[f"loss_se_{bits}"] = metrics["loss"], metrics["loss_se"]
            if args.latency_runs:
                result, _ = measure_subnet(_at(config, bits), protocol, supernet=model)
                row[f"latency_ms_{bits}"] = result.to_dict()["latency_ms"]
        rows.append(row)
    report = {"supernet": str(args.supernet), "bits": list(BITS), "int8_kernel": int8_kernel(),
              "runtime": args.runtime,
              "latency_protocol": protocol.describe() if args.latency_runs else None,
              "rows": rows}
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
