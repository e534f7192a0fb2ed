"""Which latency predictor, on HAT's published measurements (devices this machine is not).

    python scripts/bench_latency_tables.py --tables DIR [--published DIR] \
        [--published-latency FILE.csv] [--shuffles 5] [--steps 5000] [--json OUT.json]

DIR holds HAT's latency tables (`hardware-aware-transformers/latency_dataset/*_all.csv`: 2,000
measured SubTransformers per device, HAT's 10 averaged features, encoder and decoder latency
mean and std). For every table and each of ``--shuffles`` shuffles of HAT's 80/10/10 split,
each predictor is fitted on the 80% (the 10% validation picks what it picks) and scored on
the held-out 10% (MAPE, RMSE, Kendall tau), beside the measurements' own spread (median
std / mean of a row). With ``--published`` (HAT's released SubTransformer YAMLs) and
``--published-latency`` (the latency HAT reports for each), every fit also predicts the
released models of its device. Predictors:

- ``linear``: least squares on the standardised features, ridge chosen on validation
  (`automoe.costs.predictor`);
- ``mlp``: the project's MLP (HAT's shape, standardised features and target, Adam 1e-3,
  the weights of the best validation step);
- ``hat-mlp``: HAT's own recipe (features / [640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], latency /
  its per-device constant: 300 Xeon, 5000 Raspberry Pi, 200 Titan Xp; 10-400x4-1 ReLU MLP,
  Adam 1e-5, batch 128, 5,000 steps, MSE, the last step);
- ``layers``: least squares with the layer counts' interactions (a decoder layer's cost
  times the decoder's depth, likewise the encoder), ridge chosen on validation.

Timing-free: numbers are prediction errors, not speeds. Output: a table per device on
stdout and, with --json, every fold's metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.costs.latency_tables import HAT_FEATURES, hat_features, read_latency_table  # noqa: E402
from automoe.costs.metrics import regression_report  # noqa: E402
from automoe.costs.predictor import (  # noqa: E402
    PredictorConfig,
    build_mlp,
    fit_predictor,
    split_indices,
)
from automoe.io_utils import atomic_write_json  # noqa: E402

HAT_FEATURE_NORM = np.array([640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], dtype=np.float64)
# table -> (task, device, HAT's latency norm, the search space its configs come from)
TABLES = {
    "wmt14ende_cpu_xeon_all.csv": ("wmt14ende", "xeon", 300.0, "hat_wmt14"),
    "wmt14ende_cpu_raspberrypi_all.csv": ("wmt14ende", "raspberrypi", 5000.0, "hat_wmt14"),
    "wmt14ende_gpu_titanxp_all.csv": ("wmt14ende", "titanxp", 200.0, "hat_wmt14"),
    "wmt19ende_gpu_titanxp_all.csv": ("wmt19ende", "titanxp", 200.0, "hat_wmt14"),
    "iwslt14deen_gpu_titanxp_all.csv": ("iwslt14deen", "titanxp", 200.0, "hat_iwslt14"),
}
PREDICTORS = ("linear", "mlp", "hat-mlp", "layers")


def hat_mlp(x_tr, y_tr, lat_norm: float, *, steps: int, seed: int):
    """HAT's predictor recipe; returns a function features [N, 10] -> ms [N]."""
    gen = torch.Generator().manual_seed(seed)
    mlp = build_mlp(10, 400, 3, gen)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-5)
    x = torch.from_numpy(x_tr / HAT_FEATURE_NORM).float()
    y = torch.from_numpy(y_tr / lat_norm).float()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(128, len(x)),), generator=gen)
        loss = torch.nn.functional.mse_loss(mlp(x[idx]).squeeze(-1), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    mlp.eval()

    def predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = torch.from_numpy(rows / HAT_FEATURE_NORM).float()
            return mlp(z).squeeze(-1).double().numpy() * lat_norm
    return predict


def layer_design(x: np.ndarray) -> np.ndarray:
    """The 10 features plus each stack's per-layer widths times its depth (what a
    layer-by-layer cost model sums), and the decoder depth times the encoder width (the
    cross-attention's keys and values)."""
    f = {name: x[:, i] for i, name in enumerate(HAT_FEATURES)}
    enc, dec = f["encoder_layer_num"], f["decoder_layer_num"]
    cols = [x]
    for name in ("encoder_embed_dim", "encoder_ffn_embed_dim_avg",
                 "encoder_self_attention_heads_avg"):
        cols.append((enc * f[name])[:, None])
    for name in ("decoder_embed_dim", "decoder_ffn_embed_dim_avg",
                 "decoder_self_attention_heads_avg", "decoder_ende_attention_heads_avg",
                 "decoder_arbitrary_ende_attn_avg", "encoder_embed_dim"):
        cols.append((dec * f[name])[:, None])
    return np.hstack(cols)


def layers_fit(x_tr, y_tr, x_va, y_va):
    """Ridge least squares on `layer_design`, strength chosen by validation MAPE."""
    d_tr, d_va = layer_design(x_tr), layer_design(x_va)
    mean, std = d_tr.mean(axis=0), d_tr.std(axis=0)
    std[std == 0] = 1.0

    def design(d):
        return np.hstack([(d - mean) / std, np.ones((len(d), 1))])

    best = None
    for ridge in (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        a = design(d_tr)
        penalty = ridge * np.eye(a.shape[1])
        penalty[-1, -1] = 0.0
        coef = np.linalg.lstsq(a.T @ a + penalty, a.T @ y_tr, rcond=None)[0]
        err = np.mean(np.abs(design(d_va) @ coef - y_va) / y_va)
        if best is None or err < best[0]:
            best = (err, coef)
    coef = best[1]
    return lambda rows: design(layer_design(rows)) @ coef


def published_rows(published: Path, latency_csv: Path, task: str, device: str, space: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """HAT features [K, 10] and reported latency [K] of the released models of one device."""
    from search_spaces import load_space
    from search_spaces.importers import import_hat_yaml

    table = pd.read_csv(latency_csv)
    rows = table[(table["task"] == task) & (table["device"] == device)]
    sp = load_space(space)
    x = np.array([hat_features(import_hat_yaml(published / f, sp)) for f in rows["config_file"]])
    return x.reshape(len(rows), 10), rows["published_latency_ms"].to_numpy(dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", required=True, type=Path, help="folder of HAT's *_all.csv")
    p.add_argument("--published", type=Path, default=None, help="folder of HAT's released YAMLs")
    p.add_argument("--published-latency", type=Path, default=None, metavar="FILE.csv")
    p.add_argument("--shuffles", type=int, default=5)
    p.add_argument("--steps", type=int, default=5000, help="MLP steps (HAT: 5000)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report: dict = {"protocol": f"HAT's 80/10/10 split, {args.shuffles} shuffles (seeds "
                                f"0..{args.shuffles - 1}); MLPs {args.steps} steps; metrics on "
                                "the held-out 10%", "devices": {}}
    for name, (task, device, lat_norm, space) in TABLES.items():
        path = args.tables / name
        if not path.is_file():
            print(f"{path}: missing, skipped", file=sys.stderr)
            continue
        table = read_latency_table(path, fmt="hat")
        x, y = table.x, table.y
        pub = None
        if args.published and args.published_latency:
            pub = published_rows(args.published, args.published_latency, task, device, space)
        folds = []
        for seed in range(args.shuffles):
            tr, va, te = split_indices(len(y), 0.1, 0.1, seed)
            cfg = PredictorConfig(steps=args.steps, seed=seed)
            fitted, _ = fit_predictor(x[tr], y[tr], list(HAT_FEATURES), cfg)
            # fit_predictor splits its input again: give it the train rows only, so the
            # held-out rows here stay unseen by every predictor
            predict = {
                "linear": lambda r, f=fitted: f.predict_features(r, "linear"),
                "mlp": lambda r, f=fitted: f.predict_features(r, "mlp"),
                "hat-mlp": hat_mlp(x[tr], y[tr], lat_norm, steps=args.steps, seed=seed),
                "layers": layers_fit(x[tr], y[tr], x[va], y[va]),
            }
            fold = {k: regression_report(y[te], fn(x[te])) for k, fn in predict.items()}
            if pub is not None:
                fold.update({f"published_{k}": regression_report(pub[1], fn(pub[0]))
                             for k, fn in predict.items()})
            folds.append(fold)
        summary = {k: {m: float(np.mean([f[k][m] for f in folds]))
                       for m in ("mape", "rmse")} for k in folds[0]}
        report["devices"][name] = {"task": task, "device": device, "rows": int(len(y)),
                                   "noise_floor_mape": table.noise_floor_mape,
                                   "mean_over_shuffles": summary, "folds": folds}
        line = ", ".join(f"{k} {v['mape']:.2f}%" for k, v in summary.items())
        print(f"{task} {device} (noise floor {table.noise_floor_mape:.2f}%): {line}", flush=True)
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
