"""Latency predictor: features of a subnet → latency (ms) on one device.

Three kinds, each fitted on the training split and scored on held-out subnets (MAPE, RMSE,
Kendall's tau, beside a constant predictor):

- ``"analytic"`` (the default): a sum of per-layer cost terms fitted by least absolute
  relative error (`automoe.costs.analytic`); on HAT's published tables it has the lowest
  validation MAPE on every device, below HAT's MLP, gradient-boosted trees and least
  squares (docs/benchmarks.md, "Latency predictors on HAT's published measurements");
- ``"linear"``: least squares on the features, ridge strength picked on the validation
  split (per-layer features outnumber small datasets);
- ``"mlp"``: HAT's predictor, an MLP (3 hidden layers of 400, ReLU, MSE), here on
  standardised features and target, so a larger learning rate than HAT's 1e-5 works (1e-3).

The features are the project's per-layer features (`automoe.costs.features.latency_features`:
`SearchSpace.features` plus the analytic MACs per component), HAT's 10 averaged features, or
a user's columns. ``kind="auto"`` fits all three and keeps the one with the lowest
validation MAPE.

A predictor belongs to one device fingerprint and one latency protocol (stored beside it);
the search uses it as a pre-filter and re-measures what it keeps.
Saved as ``predictor.json`` (metadata, metrics) + ``predictor.safetensors`` (all tensors).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from automoe.costs.analytic import RIDGE_GRID as ANALYTIC_RIDGE_GRID
from automoe.costs.analytic import basis_name, basis_terms, fit_relative_l1
from automoe.costs.features import latency_feature_names, latency_features
from automoe.costs.metrics import regression_report
from automoe.devices import torch_threads
from automoe.io_utils import atomic_dir, atomic_write_json, read_json
from supernet.model_dir import save_safetensors

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig
    from search_spaces.space import SearchSpace

__all__ = ["PredictorConfig", "LatencyPredictor", "fit_predictor", "split_indices", "build_mlp",
           "KINDS", "DEFAULT_KIND"]

FORMAT_VERSION = 2  # 2: the analytic kind; the MLP only where it was fitted
READABLE_VERSIONS = (1, 2)
KINDS = ("analytic", "linear", "mlp")
DEFAULT_KIND = "analytic"


@dataclass(frozen=True)
class PredictorConfig:
    """Training settings: the kind to fit (`KINDS`, or ``"auto"``: all, the lowest
    validation MAPE kept), the MLP's (HAT's shape and steps, batch 128) and the 80/10/10
    split."""

    kind: str = DEFAULT_KIND
    hidden_dim: int = 400
    hidden_layers: int = 3
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    val_frac: float = 0.1
    test_frac: float = 0.1
    eval_every: int = 50
    seed: int = 0
    threads: int | None = 1  # the matmuls are small: one thread avoids OpenMP overhead

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, "auto"):
            raise ValueError(f"PredictorConfig: kind {self.kind!r}; expected one of "
                             f"{[*KINDS, 'auto']}")
        if self.hidden_dim < 1 or self.hidden_layers < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"PredictorConfig: sizes and steps must be >= 1, got {self}")
        if not (0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 1):
            raise ValueError(
                f"PredictorConfig: val_frac {self.val_frac} and test_frac {self.test_frac} must be "
                "in (0, 1) with a sum below 1"
            )


def build_mlp(
    n_features: int, hidden_dim: int, hidden_layers: int, generator: torch.Generator | None = None
) -> nn.Sequential:
    """HAT's shape: Linear(F, H) + ReLU, then (hidden_layers) × (Linear(H, H) + ReLU), then
    Linear(H, 1). Input [N, F] → output [N, 1].

    Weights are drawn from ``generator`` (PyTorch's default ``U(±1/sqrt(fan_in))``), never
    from the global RNG; without a generator they are left uninitialised (for loading).
    """
    layers: list[nn.Module] = [nn.Linear(n_features, hidden_dim, device="meta"), nn.ReLU()]
    for _ in range(hidden_layers):
        layers += [nn.Linear(hidden_dim, hidden_dim, device="meta"), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim, 1, device="meta"))
    mlp = nn.Sequential(*layers).to_empty(device="cpu")
    if generator is not None:
        for module in mlp:
            if isinstance(module, nn.Linear):
                bound = module.in_features ** -0.5
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return mlp


def split_indices(n: int, val_frac: float, test_frac: float, seed: int) -> tuple[np.ndarray, ...]:
    """Shuffled train/val/test index arrays; val and test get at least one row each."""
    if n < 5:
        raise ValueError(f"need at least 5 measured subnets to fit a predictor, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_frac))
    n_test = max(1, round(n * test_frac))
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


class LatencyPredictor:
    """A fitted predictor: its models and the kind `predict` uses (`KINDS`).

    Args:
        feature_names: names of the F input features, in order.
        kind: which model `predict` uses.
        tensors: ``x_mean``/``x_std`` [F] and ``y_mean``/``y_std`` [1] (the linear model's
            and the MLP's standardisation), ``linear_coef`` [F + 1] (intercept last);
            ``analytic_mean``/``analytic_std`` [J] (the basis terms' standardisation) and
            ``analytic_coef`` [J + 1] (in ms, intercept last); the MLP's state dict under
            ``mlp.*`` where an MLP was fitted.
        meta: JSON-ready metadata (fingerprint, protocol, space, metrics, settings).
    """

    def __init__(
        self,
        *,
        feature_names: Sequence[str],
        kind: str,
        tensors: dict[str, torch.Tensor],
        config: PredictorConfig,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.config = config
        self.tensors = {k: v.detach().to(torch.float64 if not k.startswith("mlp.") else torch.float32)
                        for k, v in tensors.items()}
        self.meta = dict(meta or {})
        self.basis = basis_name(self.feature_names)
        self._mlp: nn.Sequential | None = None
        if any(k.startswith("mlp.") for k in self.tensors):
            self._mlp = build_mlp(len(self.feature_names), config.hidden_dim, config.hidden_layers)
            self._mlp.load_state_dict({k[4:]: v for k, v in self.tensors.items()
                                       if k.startswith("mlp.")})
            self._mlp.eval()
        self.kind = kind

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this predictor holds a fitted model of."""
        have = {"linear": "linear_coef" in self.tensors, "mlp": self._mlp is not None,
                "analytic": "analytic_coef" in self.tensors}
        return tuple(k for k in KINDS if have[k])

    @property
    def kind(self) -> str:
        return self._kind

    @kind.setter
    def kind(self, kind: str) -> None:
        self._check_kind(kind)
        self._kind = kind

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown predictor kind {kind!r}; expected one of {list(KINDS)}")
        if kind not in self.kinds:
            raise ValueError(f"this predictor holds no {kind} model (it has {list(self.kinds)}); "
                             f"fit it with kind {kind!r} or 'auto'")

    # ---- prediction --------------------------------------------------------------------
    def _standardise(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"predictor expects features of shape [N, {len(self.feature_names)}], got {x.shape}"
            )
        return (x - self.tensors["x_mean"].numpy()) / self.tensors["x_std"].numpy()

    def predict_features(self, features: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Latency (target units, ms) for feature rows [N, F] → [N]."""
        z = self._standardise(features)
        kind = kind or self.kind
        self._check_kind(kind)
        if kind == "analytic":
            t = self.tensors
            terms = basis_terms(np.asarray(features, dtype=np.float64), self.basis)
            u = (terms - t["analytic_mean"].numpy()) / t["analytic_std"].numpy()
            coef = t["analytic_coef"].numpy()
            return u @ coef[:-1] + coef[-1]
        if kind == "linear":
            coef = self.tensors["linear_coef"].numpy()
            out = z @ coef[:-1] + coef[-1]
        else:
            assert self._mlp is not None
            with torch.no_grad():
                out = self._mlp(torch.from_numpy(z).float()).squeeze(-1).double().numpy()
        return out * float(self.tensors["y_std"]) + float(self.tensors["y_mean"])

    @property
    def table_format(self) -> str:
        """What the predictor reads: ``"automoe"`` (a dataset of `automoe latency collect`:
        the space's per-layer features), ``"hat"`` (HAT's 10 averaged features) or
        ``"columns"`` (a user's own feature columns)."""
        return str(self.meta.get("format", "automoe"))

    def predict_table(self, frame: Any, *, source: str = "<table>") -> np.ndarray:
        """Latency (ms) of each row of a table holding the feature columns it was fitted on
        (extra columns ignored) → [N]."""
        from automoe.costs.latency_tables import table_features

        return self.predict_features(table_features(frame, self.feature_names, source=source))

    def predict(self, configs: Sequence[SubnetConfig], space: SearchSpace | None = None
                ) -> np.ndarray:
        """Latency (ms) of each `SubnetConfig`: from HAT's averaged features for a predictor
        fitted on a HAT table, else from `latency_features` (default space: the one the
        predictor was trained on, loaded by name)."""
        if self.table_format == "hat":
            from automoe.costs.latency_tables import hat_features

            return self.predict_features(np.array([hat_features(c) for c in configs],
                                                  dtype=np.float64).reshape(len(configs), -1))
        if self.table_format != "automoe":
            raise ValueError(f"a predictor fitted on the columns {list(self.feature_names)} "
                             "predicts rows of a table with those columns (--table), not "
                             "subnet configs")
        if space is None:
            from search_spaces import load_space

            space = load_space(self.meta["space"])
        names = tuple(latency_feature_names(space))
        if names != self.feature_names:
            raise ValueError(
                f"space {getattr(space, 'name', space)!r} gives features {list(names)}, the "
                f"predictor was trained on {list(self.feature_names)}"
            )
        rows = [latency_features(space, c) for c in configs]
        return self.predict_features(np.array(rows, dtype=np.float64).reshape(len(rows), -1))

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Writes ``predictor.json`` + ``predictor.safetensors`` into folder ``path``."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_safetensors({k: v.contiguous() for k, v in self.tensors.items()},
                             tmp / "predictor.safetensors",
                             name=Path(path) / "predictor.safetensors")
            doc = {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "feature_names": list(self.feature_names),
                "config": asdict(self.config),
                "meta": self.meta,
            }
            atomic_write_json(tmp / "predictor.json", doc)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyPredictor:
        folder = Path(path)
        meta_path = folder / "predictor.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: no predictor here (expected predictor.json)")
        doc = read_json(meta_path)
        if doc.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(f"{meta_path}: format_version {doc.get('format_version')!r}, "
                             f"expected one of {list(READABLE_VERSIONS)}")
        return cls(
            feature_names=doc["feature_names"],
            kind=doc["kind"],
            tensors=load_file(str(folder / "predictor.safetensors")),
            config=PredictorConfig(**doc["config"]),
            meta=doc["meta"],
        )


RIDGE_GRID = (0.0, 0.1, 1.0, 10.0, 100.0)


def _fit_linear(z: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Least squares with an intercept on standardised features, ``ridge · |w|²`` added
    (the intercept is not penalised) → coef [F + 1]. Minimum-norm solution if singular."""
    design = np.hstack([z, np.ones((len(z), 1))])
    if ridge == 0.0:
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return coef
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    coef, *_ = np.linalg.lstsq(design.T @ design + penalty, design.T @ y, rcond=None)
    return coef


def _select_ridge(z_tr, y_tr, z_val, y_val, y_mean: float, y_std: float) -> tuple[float, np.ndarray]:
    """The ridge strength of `RIDGE_GRID` with the lowest validation MAPE, and its fit."""
    best = None
    for ridge in RIDGE_GRID:
        coef = _fit_linear(z_tr, y_tr, ridge)
        pred = (z_val @ coef[:-1] + coef[-1]) * y_std + y_mean
        truth = y_val * y_std + y_mean
        err = float(np.mean(np.abs(pred - truth) / np.abs(truth)))
        if best is None or err < best[0]:
            best = (err, ridge, coef)
    assert best is not None
    return best[1], best[2]


def _fit_mlp(z_tr, y_tr, z_val, y_val, cfg: PredictorConfig) -> dict[str, torch.Tensor]:
    """Adam on MSE; keeps the weights with the lowest validation MSE (checked every
    ``eval_every`` steps). Mini-batches are drawn without replacement within each step."""
    gen = torch.Generator().manual_seed(cfg.seed)
    mlp = build_mlp(z_tr.shape[1], cfg.hidden_dim, cfg.hidden_layers, gen)
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
    x, y = torch.from_numpy(z_tr).float(), torch.from_numpy(y_tr).float()
    xv, yv = torch.from_numpy(z_val).float(), torch.from_numpy(y_val).float()
    best, best_state = float("inf"), None
    batch = min(cfg.batch_size, len(x))
    for step in range(1, cfg.steps + 1):
        idx = torch.randperm(len(x), generator=gen)[:batch]
        loss = nn.functional.mse_loss(mlp(x[idx]).squeeze(-1), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                val = float(nn.functional.mse_loss(mlp(xv).squeeze(-1), yv))
            if val < best:
                best = val
                best_state = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    assert best_state is not None
    return best_state


def _fit_analytic(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, basis: str
                  ) -> tuple[float, dict[str, torch.Tensor]]:
    """The analytic form on the training rows (basis terms standardised with their
    statistics), ridge strength of `automoe.costs.analytic.RIDGE_GRID` with the lowest
    validation MAPE; its tensors ``analytic_*``."""
    terms = basis_terms(x, basis)
    mean, std = terms[tr].mean(axis=0), terms[tr].std(axis=0)
    std[std == 0] = 1.0  # a constant term (e.g. one encoder depth): centred to 0
    u = np.hstack([(terms - mean) / std, np.ones((len(terms), 1))])
    best = None
    for ridge in ANALYTIC_RIDGE_GRID:
        coef = fit_relative_l1(u[tr], y[tr], ridge)
        err = float(np.mean(np.abs(u[va] @ coef - y[va]) / y[va]))
        if best is None or err < best[0]:
            best = (err, ridge, coef)
    assert best is not None
    return best[1], {"analytic_mean": torch.from_numpy(mean), "analytic_std": torch.from_numpy(std),
                     "analytic_coef": torch.from_numpy(best[2])}


def fit_predictor(
    features: np.ndarray,
    latency_ms: np.ndarray,
    feature_names: Sequence[str],
    config: PredictorConfig | None = None,
    *,
    meta: dict[str, Any] | None = None,
    split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fits a latency predictor on one device's measurements.

    The analytic and linear models are always fitted (seconds at most); the
    MLP where ``config.kind`` is ``"mlp"`` or ``"auto"``.

    Args:
        features: [N, F] feature rows (``space.features(config)``).
        latency_ms: [N] measured latencies.
        feature_names: F names.
        config: training settings; ``config.kind`` is the kind `predict` uses (``"auto"``:
            the fitted kind with the lowest validation MAPE).
        meta: stored with the predictor (fingerprint, protocol, space, dataset path).
        split: (train, val, test) row indices; default `split_indices` with the config's
            fractions and seed.

    Returns:
        The predictor and a report ``{"test": {kind|"constant": metrics}, "val": ...,
        "selected": kind, "n_train"/"n_val"/"n_test": ..., "linear_ridge"/"analytic_ridge":
        the strengths picked}``; metrics are MAPE (%), RMSE (ms), Kendall tau.
    """
    cfg = config or PredictorConfig()
    with torch_threads(cfg.threads):
        return _fit(features, latency_ms, feature_names, cfg, meta, split)


def _fit(features: np.ndarray, latency_ms: np.ndarray, feature_names: Sequence[str],
         cfg: PredictorConfig, meta: dict[str, Any] | None,
         split: tuple[np.ndarray, np.ndarray, np.ndarray] | None
         ) -> tuple[LatencyPredictor, dict[str, Any]]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(latency_ms, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(feature_names):
        raise ValueError(
            f"fit_predictor: features {x.shape}, targets {y.shape}, {len(feature_names)} names disagree"
        )
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("fit_predictor: features must be finite and latencies finite and > 0")
    if split is None:
        tr, va, te = split_indices(len(y), cfg.val_frac, cfg.test_frac, cfg.seed)
    else:
        tr, va, te = (np.asarray(i, dtype=np.int64) for i in split)
        if min(len(tr), len(va), len(te)) == 0:
            raise ValueError("fit_predictor: every part of the split needs a row")
    x_mean = x[tr].mean(axis=0)
    x_std = x[tr].std(axis=0)
    x_std[x_std == 0] = 1.0  # constant feature: leave it centred at 0
    y_mean, y_std = float(y[tr].mean()), float(y[tr].std()) or 1.0
    z = (x - x_mean) / x_std
    yz = (y - y_mean) / y_std
    tensors: dict[str, torch.Tensor] = {
        "x_mean": torch.from_numpy(x_mean),
        "x_std": torch.from_numpy(x_std),
        "y_mean": torch.tensor([y_mean], dtype=torch.float64),
        "y_std": torch.tensor([y_std], dtype=torch.float64),
    }
    ridge, coef = _select_ridge(z[tr], yz[tr], z[va], yz[va], y_mean, y_std)
    tensors["linear_coef"] = torch.from_numpy(coef)
    analytic_ridge, analytic = _fit_analytic(x, y, tr, va, basis_name(feature_names))
    tensors.update(analytic)
    kinds = ["analytic", "linear"]
    if cfg.kind in ("mlp", "auto"):
        kinds.append("mlp")
        for k, v in _fit_mlp(z[tr], yz[tr], z[va], yz[va], cfg).items():
            tensors[f"mlp.{k}"] = v
    predictor = LatencyPredictor(
        feature_names=feature_names, kind="analytic", tensors=tensors, config=cfg, meta=meta
    )
    report: dict[str, Any] = {"n_train": len(tr), "n_val": len(va), "n_test": len(te),
                              "linear_ridge": ridge, "analytic_ridge": analytic_ridge,
                              "analytic_basis": predictor.basis}
    for part, idx in (("val", va), ("test", te)):
        report[part] = {
            kind: regression_report(y[idx], predictor.predict_features(x[idx], kind))
            for kind in kinds
        }
        report[part]["constant"] = regression_report(y[idx], np.full(len(idx), y_mean))
    report["selected"] = (cfg.kind if cfg.kind != "auto"
                          else min(kinds, key=lambda k: report["val"][k]["mape"]))
    predictor.kind = report["selected"]
    predictor.meta["report"] = report
    return predictor, report
