"""How one search's fronts differ when latency is measured in torch or in ONNX Runtime.

    python scripts/bench_latency_fronts.py RUN_DIR [--json F]

RUN_DIR is an ``automoe search`` run with both ``latency`` and ``latency_ort`` among its
objectives, so every candidate was timed in both runtimes by the same actor under the same
protocol. Over its candidates (those with both latencies and a dev loss) it reports:

- the rank agreement of the two latencies (Kendall tau-b, Spearman rho, 95% bootstrap over
  candidates, `automoe.stats.rank_agreement`) and the torch / ORT latency ratio;
- the two 2-objective fronts of the same candidates, (dev loss, torch latency) and (dev
  loss, ORT latency): their sizes and how many subnets they share;
- the cost of choosing with the wrong runtime: for each subnet on the ORT front, taken as
  a latency budget in ORT, the best dev loss among torch-front subnets within that budget
  minus the ORT front's own (0 where the torch front does as well; no torch-front subnet
  within the budget is counted apart).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from automoe.io_utils import atomic_write_json
from automoe.run_dir import read_run
from automoe.stats import rank_agreement
from evolution.pareto import non_dominated_mask

COLUMNS = ("loss", "latency_ms", "latency_ort_ms")


def compare_fronts(table: dict[str, np.ndarray], keys: list[str]) -> dict[str, object]:
    """The report above from [n] arrays ``loss``, ``latency_ms``, ``latency_ort_ms``."""
    loss, torch_ms, ort_ms = (table[c] for c in COLUMNS)
    agreement = rank_agreement(torch_ms, ort_ms, seed=0)
    on_torch = non_dominated_mask(np.stack([loss, torch_ms], axis=1))
    on_ort = non_dominated_mask(np.stack([loss, ort_ms], axis=1))
    regrets, out_of_budget = [], 0
    for i in np.flatnonzero(on_ort):
        within = on_torch & (ort_ms <= ort_ms[i])
        if not within.any():
            out_of_budget += 1
            continue
        regrets.append(float(loss[within].min() - loss[i]))
    ratio = torch_ms / ort_ms
    return {
        "candidates": len(keys),
        "kendall_tau": [agreement.tau, agreement.tau_lo, agreement.tau_hi],
        "spearman_rho": [agreement.rho, agreement.rho_lo, agreement.rho_hi],
        "torch_over_ort": {"median": float(np.median(ratio)), "min": float(ratio.min()),
                           "max": float(ratio.max())},
        "front_torch": [keys[i] for i in np.flatnonzero(on_torch)],
        "front_ort": [keys[i] for i in np.flatnonzero(on_ort)],
        "shared": int((on_torch & on_ort).sum()),
        "ort_budgets": int(on_ort.sum()),
        "regret_nats": {"worse": int(sum(r > 0 for r in regrets)),
                        "median": float(np.median(regrets)) if regrets else None,
                        "max": float(max(regrets)) if regrets else None,
                        "none_within_budget": out_of_budget},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="search RUN_DIR with latency and latency_ort objectives")
    p.add_argument("--json", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    run = read_run(args.run)
    missing = [c for c in COLUMNS if c not in run.candidates]
    if missing:
        raise SystemExit(f"{run.path / 'candidates.csv'}: no column {', '.join(missing)} (search "
                         "with --objectives loss,latency,latency_ort)")
    rows = run.candidates.dropna(subset=list(COLUMNS)).drop_duplicates("key")
    table = {c: rows[c].to_numpy(dtype=float) for c in COLUMNS}
    report = {"run": str(run.path), **compare_fronts(table, rows["key"].astype(str).tolist())}
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
