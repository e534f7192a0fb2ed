"""Which search objective has the most signal per CPU second (docs/benchmarks.md, "Search
objectives")?

    python scripts/bench_objectives.py --supernet runs/study/supernet --data runs/study/data \
        [--subnets 12] [--seed 0] [--threads 1] [--json F]

Scores ``--subnets`` random subnets of the supernet's space with the search's own scorer
(`automoe.dev_scoring.DevScorer`: whole dev split, greedy decoding, sacreBLEU 95%
bootstrap intervals, loss SE over sentences) and reports per objective:

- CPU seconds per subnet (process CPU time, ``--threads`` torch threads): the loss is one
  teacher-forced pass, BLEU needs the decoding on top of it;
- resolution: the spread of the scores across subnets (max - min) divided by the median
  95% interval width of one score; the number of subnet pairs whose intervals do not
  overlap (pairs the data can order);
- agreement: Kendall tau between BLEU and chrF, and between BLEU and -loss, with intervals.

Which objective ranks as *training* does is `automoe fidelity`'s question; this script
measures what each costs and how finely it resolves subnets on the same supernet.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.checkpoints import read_supernet  # noqa: E402
from automoe.dev_scoring import DevScorer, ScoringSettings  # noqa: E402
from automoe.fidelity import scored  # noqa: E402
from automoe.io_utils import atomic_write_json  # noqa: E402
from automoe.stats import rank_agreement  # noqa: E402


def _separable(lo: np.ndarray, hi: np.ndarray) -> int:
    return sum(1 for i, j in itertools.combinations(range(len(lo)), 2)
               if hi[i] < lo[j] or hi[j] < lo[i])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--subnets", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = read_supernet(args.supernet)
    model = ckpt.build_model()
    dev = DevScorer(args.data, ScoringSettings(bleu=True, threads=args.threads),
                    label_smoothing=ckpt.label_smoothing)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.subnets):
        config = ckpt.space.sample(rng)
        rows.append(scored(dev, model, config))
        print(f"{i + 1}/{args.subnets} {config.key()} loss {rows[-1]['loss']:.3f} "
              f"bleu {rows[-1]['bleu']:.2f} ({rows[-1]['loss_seconds']:.1f} s + "
              f"{rows[-1]['bleu_seconds']:.1f} s)", flush=True)
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    loss_lo, loss_hi = col["loss"] - 1.96 * col["loss_se"], col["loss"] + 1.96 * col["loss_se"]
    out = {
        "protocol": f"{args.subnets} random subnets of space {ckpt.space.name!r}, supernet "
                    f"{ckpt.file} (update {ckpt.update}), {dev.n} dev sentences, greedy, "
                    f"{args.threads} torch thread(s), process CPU seconds",
        "torch": torch.__version__, "load_average": os.getloadavg(),
        "seconds_per_subnet": {"loss": float(np.median(col["loss_seconds"])),
                               "bleu": float(np.median(col["loss_seconds"]
                                                       + col["bleu_seconds"]))},
        "resolution": {
            "loss": float(np.ptp(col["loss"]) / np.median(loss_hi - loss_lo)),
            "bleu": float(np.ptp(col["bleu"]) / np.median(col["bleu_hi"] - col["bleu_lo"])),
            "chrf": float(np.ptp(col["chrf"]) / np.median(col["chrf_hi"] - col["chrf_lo"]))},
        "separable_pairs": {"of": args.subnets * (args.subnets - 1) // 2,
                            "loss": _separable(loss_lo, loss_hi),
                            "bleu": _separable(col["bleu_lo"], col["bleu_hi"]),
                            "chrf": _separable(col["chrf_lo"], col["chrf_hi"])},
        "agreement": {"bleu_vs_chrf": rank_agreement(col["bleu"], col["chrf"]).to_dict(),
                      "bleu_vs_neg_loss": rank_agreement(col["bleu"], -col["loss"]).to_dict()},
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        atomic_write_json(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
