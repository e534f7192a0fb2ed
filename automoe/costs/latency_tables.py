"""Latency tables nobody here measured: HAT's published format, or any CSV of feature and
latency columns, for fitting a predictor of a device this machine cannot reach.

HAT's tables (`hardware-aware-transformers/latency_dataset/*.csv`) hold one row per
SubTransformer: its 10 features, each an average over the active layers (`HAT_FEATURES`),
then ``latency_mean_encoder``, ``latency_mean_decoder`` and their standard deviations (ms);
HAT predicts the sum of the two means. `hat_features` computes the same 10 numbers from a
`SubnetConfig` (HAT's ``utils.get_config_features``: a layer's FFN width is its experts'
mean; the arbitrary encoder-decoder attention as the number of encoder layers attended,
1/2/3, which is what HAT's function turns its YAML's -1/1/2 into and what its tables hold),
so a predictor fitted on a table predicts any config of a HAT-like space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

import numpy as np

from automoe.io_utils import read_csv

if TYPE_CHECKING:
    import pandas as pd

    from search_spaces.config import SubnetConfig

__all__ = ["HAT_FEATURES", "HAT_TARGET", "HAT_STD", "TABLE_FORMATS", "LatencyTable",
           "read_latency_table", "hat_features", "table_features"]

HAT_FEATURES = ("encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg",
                "encoder_self_attention_heads_avg", "decoder_embed_dim", "decoder_layer_num",
                "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
                "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg")
HAT_TARGET = ("latency_mean_encoder", "latency_mean_decoder")
HAT_STD = ("latency_std_encoder", "latency_std_decoder")
TABLE_FORMATS = ("hat", "columns")


@dataclass(frozen=True)
class LatencyTable:
    """A table's feature matrix x [N, F], target y [N] (ms), feature and target columns,
    and, for HAT's format, each row's measurement std [N] (the sum of the two parts')."""

    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    target: tuple[str, ...]
    std: np.ndarray | None = None

    @property
    def noise_floor_mape(self) -> float | None:
        """The median relative std of a row's measurement, in %: no predictor of these
        numbers can be expected to beat it (None without std columns)."""
        return None if self.std is None else float(np.median(self.std / self.y) * 100)


def read_latency_table(path: str | os.PathLike, *, fmt: str = "hat",
                       features: Sequence[str] | None = None,
                       target: Sequence[str] | None = None) -> LatencyTable:
    """Reads a latency table: ``fmt="hat"`` (HAT's columns; the target is the sum of the
    encoder and decoder means), or ``"columns"`` with the given feature and target columns
    (several target columns are summed). ValueError naming the file and column otherwise."""
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {list(TABLE_FORMATS)}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no latency table here")
    frame = read_csv(p)
    if fmt == "hat":
        features, target = HAT_FEATURES, HAT_TARGET
    elif not features or not target:
        raise ValueError(f"{p}: --format columns needs --features COLS and --target COLS")
    features, target = tuple(features), tuple(target)
    x = table_features(frame, features, source=str(p))
    y = _numeric(frame, target, str(p)).sum(axis=1)
    if len(y) == 0:
        raise ValueError(f"{p}: no rows")
    if np.any(y <= 0):
        row = int(np.flatnonzero(y <= 0)[0])
        raise ValueError(f"{p}: row {row + 2}: latency {y[row]:g} ms; expected > 0")
    std = None
    if fmt == "hat" and all(c in frame for c in HAT_STD):
        std = _numeric(frame, HAT_STD, str(p)).sum(axis=1)
    return LatencyTable(x, y, features, target, std)


def table_features(frame: pd.DataFrame, features: Sequence[str], *, source: str) -> np.ndarray:
    """The [N, F] float matrix of ``features`` in ``frame`` (extra columns ignored)."""
    return _numeric(frame, tuple(features), source)


def _numeric(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> np.ndarray:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; it has {list(frame.columns)}")
    values = frame[list(columns)].apply(lambda col: col.map(_float))
    bad = values.isna().to_numpy()
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{source}: row {row + 2}, column {columns[col]!r}: "
                         f"{frame[columns[col]].iloc[row]!r} is not a finite number")
    return values.to_numpy(dtype=np.float64)


def _float(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


def hat_features(config: SubnetConfig) -> list[float]:
    """HAT's 10 averaged features of ``config``, in `HAT_FEATURES` order (the last: the mean
    number of encoder layers a decoder layer attends, 1-3, as in HAT's tables)."""
    def ffn(dims: tuple[tuple[int, ...], ...]) -> float:
        return fmean(fmean(layer) for layer in dims)

    c = config
    return [float(v) for v in (
        c.encoder_embed_dim, c.encoder_layers, ffn(c.encoder_expert_dims),
        fmean(c.encoder_heads), c.decoder_embed_dim, c.decoder_layers,
        ffn(c.decoder_expert_dims), fmean(c.decoder_heads), fmean(c.decoder_cross_heads),
        fmean(c.decoder_ende_attn))]
