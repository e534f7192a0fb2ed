"""Which latency predictor, on HAT's published measurements (devices this machine is not).

    python scripts/bench_latency_tables.py --tables DIR [--published DIR] \
        [--published-latency FILE.csv] [--shuffles 5] [--steps 5000] [--json OUT.json] \
        [--csv FOLDS.csv]

DIR holds HAT's latency tables (`hardware-aware-transformers/latency_dataset/*_all.csv`: 2,000
measured SubTransformers per device, HAT's 10 averaged features, encoder and decoder latency
mean and std). For every table and each of ``--shuffles`` shuffles of HAT's 80/10/10 split
(seeds 0, 1, ...), each predictor is fitted on the 80%, picks what it picks (ridge strength,
checkpoint, tree settings) on the 10% validation rows, and is scored on the 10% test rows
(MAPE, RMSE, Kendall tau), beside the measurements' own spread (median std / mean of a row).
With ``--published`` (HAT's released SubTransformer YAMLs) and ``--published-latency`` (the
latency HAT reports for each), every fit also predicts the released models of its device
(MAPE and mean signed error). Predictors:

- ``analytic`` (`automoe latency fit`'s default): per-layer cost terms, least absolute
  relative error (`automoe.costs.analytic`);
- ``analytic-ls``: the same terms by least squares, ridge chosen on validation (the loss's
  share of the difference);
- ``linear``, ``mlp``: the project's other kinds (`automoe.costs.predictor`);
- ``hat-mlp``: HAT's own recipe (features / [640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], latency /
  its per-device constant: 300 Xeon, 5000 Raspberry Pi, 200 Titan Xp; 10-400x4-1 ReLU MLP,
  Adam 1e-5, batch 128, 5,000 steps, MSE, the last step);
- ``hgb``: gradient-boosted trees (scikit-learn's HistGradientBoostingRegressor) on log latency,
  loss, rounds and leaves picked on validation; skipped without scikit-learn.

Diagnostic, not a predictor: ``drift_oracle`` scales each analytic prediction by the median
relative residual of the 30 training rows nearest in the table's row order (the order HAT
measured them in): how much of the error is the device's drift during the collection.

Timing-free: numbers are prediction errors, not speeds. Output: a table per device on stdout;
with --json every fold's metrics and the published models' predictions; with --csv one row
per (table, seed, predictor, part).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.costs.analytic import hat_layer_terms  # noqa: E402
from automoe.costs.latency_tables import HAT_FEATURES, hat_features, read_latency_table  # noqa: E402
from automoe.costs.metrics import regression_report  # noqa: E402
from automoe.costs.predictor import (  # noqa: E402
    PredictorConfig,
    build_mlp,
    fit_predictor,
    split_indices,
)
from automoe.io_utils import atomic_write_csv, atomic_write_json  # noqa: E402

HAT_FEATURE_NORM = np.array([640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], dtype=np.float64)
# table -> (task, device, HAT's latency norm, the search space its configs come from)
TABLES = {
    "wmt14ende_cpu_xeon_all.csv": ("wmt14ende", "xeon", 300.0, "hat_wmt14"),
    "wmt14ende_cpu_raspberrypi_all.csv": ("wmt14ende", "raspberrypi", 5000.0, "hat_wmt14"),
    "wmt14ende_gpu_titanxp_all.csv": ("wmt14ende", "titanxp", 200.0, "hat_wmt14"),
    "wmt19ende_gpu_titanxp_all.csv": ("wmt19ende", "titanxp", 200.0, "hat_wmt14"),
    "iwslt14deen_gpu_titanxp_all.csv": ("iwslt14deen", "titanxp", 200.0, "hat_iwslt14"),
}
PREDICTORS = ("analytic", "analytic-ls", "linear", "mlp", "hat-mlp", "hgb")
DRIFT_NEIGHBOURS = 30


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


def _val_mape(predict, x, y) -> float:
    return float(np.mean(np.abs(predict(x) - y) / y))


def analytic_ls(x_tr, y_tr, x_va, y_va):
    """`hat_layer_terms` by ridge least squares, strength chosen by validation MAPE."""
    t_tr = hat_layer_terms(x_tr)
    mean, std = t_tr.mean(axis=0), t_tr.std(axis=0)
    std[std == 0] = 1.0

    def design(rows):
        return np.hstack([(hat_layer_terms(rows) - mean) / std, np.ones((len(rows), 1))])

    a, best = design(x_tr), None
    for ridge in (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        penalty = ridge * np.eye(a.shape[1])
        penalty[-1, -1] = 0.0
        coef = np.linalg.lstsq(a.T @ a + penalty, a.T @ y_tr, rcond=None)[0]
        err = _val_mape(lambda r, c=coef: design(r) @ c, x_va, y_va)
        if best is None or err < best[0]:
            best = (err, coef)
    assert best is not None
    return lambda rows, c=best[1]: design(rows) @ c


def hgb(x_tr, y_tr, x_va, y_va, seed: int):
    """Gradient-boosted trees on log latency; settings picked by validation MAPE (None
    without scikit-learn)."""
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError:
        return None
    best = None
    for loss in ("squared_error", "absolute_error"):
        for rounds in (200, 800):
            for leaves in (15, 31):
                model = HistGradientBoostingRegressor(
                    loss=loss, learning_rate=0.05, max_iter=rounds, max_leaf_nodes=leaves,
                    early_stopping=False, random_state=seed).fit(x_tr, np.log(y_tr))
                err = _val_mape(lambda r, m=model: np.exp(m.predict(r)), x_va, y_va)
                if best is None or err < best[0]:
                    best = (err, model)
    assert best is not None
    return lambda rows, m=best[1]: np.exp(m.predict(rows))


def drift_oracle(predict, x, y, tr, te) -> np.ndarray:
    """Test predictions scaled by the median relative residual of the `DRIFT_NEIGHBOURS`
    training rows nearest each test row in the table's order."""
    order = np.sort(tr)
    rel = y[order] / predict(x[order]) - 1.0
    out = predict(x[te])
    half = DRIFT_NEIGHBOURS // 2
    for k, row in enumerate(te):
        at = int(np.searchsorted(order, row))
        out[k] *= 1.0 + np.median(rel[max(0, at - half): at + half])
    return out


def order_diagnostics(predict, x, y, tr) -> dict:
    """In the table's row order, on the training rows: lag-1 autocorrelation of the relative
    residuals, and blocks of 50 rows whose median residual is beyond ±10%."""
    order = np.sort(tr)
    rel = y[order] / predict(x[order]) - 1.0
    blocks = [(int(order[i]), float(np.median(rel[i:i + 50]))) for i in range(0, len(rel), 50)]
    shifted = [(start, m) for start, m in blocks if abs(m) > 0.10]
    return {"lag1_autocorrelation": float(np.corrcoef(rel[:-1], rel[1:])[0, 1]),
            "blocks_of_50": len(blocks), "shifted_blocks": len(shifted),
            "shifted_block_median_pct": [round(100 * m, 1) for _, m in shifted],
            "shifted_block_first_rows": [start + 2 for start, _ in shifted]}  # CSV line numbers


def published_rows(published: Path, latency_csv: Path, task: str, device: str, space: str
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, HAT features [K, 10] and reported latency [K] of one device's released models."""
    from search_spaces import load_space
    from search_spaces.importers import import_hat_yaml

    table = pd.read_csv(latency_csv)
    rows = table[(table["task"] == task) & (table["device"] == device)]
    sp = load_space(space)
    x = np.array([hat_features(import_hat_yaml(published / f, sp)) for f in rows["config_file"]])
    return (list(rows["config_file"]), x.reshape(len(rows), 10),
            rows["published_latency_ms"].to_numpy(dtype=np.float64))


def _spread(values: list[float]) -> dict:
    v = np.asarray([np.nan if a is None else a for a in values], dtype=np.float64)
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)),
            "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}


def run_table(path: Path, spec: tuple, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    task, device, lat_norm, space = spec
    table = read_latency_table(path, fmt="hat")
    x, y = table.x, table.y
    pub = None
    if args.published and args.published_latency:
        pub = published_rows(args.published, args.published_latency, task, device, space)
    folds, rows = [], []
    for seed in range(args.shuffles):
        tr, va, te = split_indices(len(y), 0.1, 0.1, seed)
        fitted, _ = fit_predictor(x, y, list(HAT_FEATURES),
                                  PredictorConfig(kind="auto", steps=args.steps, seed=seed),
                                  split=(tr, va, te))
        predict = {kind: (lambda r, k=kind, f=fitted: f.predict_features(r, k))
                   for kind in ("analytic", "linear", "mlp")}
        predict["analytic-ls"] = analytic_ls(x[tr], y[tr], x[va], y[va])
        predict["hat-mlp"] = hat_mlp(x[tr], y[tr], lat_norm, steps=args.steps, seed=seed)
        trees = hgb(x[tr], y[tr], x[va], y[va], seed)
        if trees is not None:
            predict["hgb"] = trees
        fold: dict = {"seed": seed, "val": {}, "test": {}, "published": {}}
        for name, fn in predict.items():
            fold["val"][name] = regression_report(y[va], fn(x[va]))
            fold["test"][name] = regression_report(y[te], fn(x[te]))
            if pub is not None:
                guess = fn(pub[1])
                fold["published"][name] = {
                    **regression_report(pub[2], guess),
                    "signed_pct": float(np.mean((guess - pub[2]) / pub[2]) * 100),
                    "predicted_ms": [float(g) for g in guess]}
        fold["test"]["drift_oracle"] = regression_report(
            y[te], drift_oracle(predict["analytic"], x, y, tr, te))
        if seed == 0:
            fold["row_order"] = order_diagnostics(predict["analytic"], x, y, tr)
        folds.append(fold)
        for part in ("val", "test", "published"):
            for name, m in fold[part].items():
                rows.append({"table": path.name, "task": task, "device": device, "seed": seed,
                             "predictor": name, "part": part, "mape": m["mape"],
                             "rmse": m["rmse"], "kendall_tau": m["kendall_tau"],
                             "signed_pct": m.get("signed_pct"), "n": m["n"]})
    summary = {part: {name: {metric: _spread([f[part][name][metric] for f in folds])
                             for metric in ("mape", "rmse", "kendall_tau", "signed_pct")
                             if metric in folds[0][part][name]}
                      for name in folds[0][part]}
               for part in ("val", "test", "published")}
    out = {"task": task, "device": device, "rows": int(len(y)),
           "noise_floor_mape": table.noise_floor_mape, "summary": summary,
           "row_order": folds[0].pop("row_order"), "folds": folds}
    if pub is not None:
        out["published_models"] = {"config_file": pub[0],
                                   "published_ms": [float(v) for v in pub[2]]}
    return out, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", required=True, type=Path, help="folder of HAT's *_all.csv")
    p.add_argument("--published", type=Path, default=None, help="folder of HAT's released YAMLs")
    p.add_argument("--published-latency", type=Path, default=None, metavar="FILE.csv")
    p.add_argument("--shuffles", type=int, default=5)
    p.add_argument("--steps", type=int, default=5000, help="MLP steps (HAT: 5000)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--csv", type=Path, default=None, help="per-fold metrics, one row each")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report: dict = {
        "protocol": f"HAT's 80/10/10 split, {args.shuffles} shuffles (seeds 0.."
                    f"{args.shuffles - 1}); fitted on the 80%, choices on the 10% validation "
                    f"rows, metrics on the 10% test rows; MLPs {args.steps} steps",
        "machine": {"torch": torch.__version__, "cpu_capability":
                    torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
                    "threads": 1},
        "devices": {}}
    all_rows: list[dict] = []
    for name, spec in TABLES.items():
        path = args.tables / name
        if not path.is_file():
            print(f"{path}: missing, skipped", file=sys.stderr)
            continue
        out, rows = run_table(path, spec, args)
        report["devices"][name] = out
        all_rows += rows
        test, pub = out["summary"]["test"], out["summary"]["published"]
        print(f"{spec[0]} {spec[1]} (spread {out['noise_floor_mape']:.2f}%, "
              f"{out['row_order']['shifted_blocks']}/{out['row_order']['blocks_of_50']} shifted "
              f"blocks): test MAPE " + ", ".join(f"{k} {v['mape']['mean']:.2f}"
                                                 for k, v in test.items()), flush=True)
        if pub:
            print("    published MAPE " + ", ".join(
                f"{k} {v['mape']['mean']:.2f} ({v['signed_pct']['mean']:+.1f})"
                for k, v in pub.items()), flush=True)
    if args.json:
        atomic_write_json(args.json, report)
    if args.csv and all_rows:
        atomic_write_csv(pd.DataFrame(all_rows), args.csv, float_format="%.6g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
