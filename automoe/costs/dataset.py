"""Latency datasets: measure random subnets of a space on this device, as a resumable CSV.

One row per subnet: its key and config (JSON), the predictor features (``f_<name>`` columns:
the space's features and the analytic MACs per component, `automoe.costs.features`),
the analytic FLOPs, the latency statistics of its timed runs (median ``latency_ms``, HAT's
trimmed mean, mean, std, p10/p90, cv, encoder/decoder medians), the raw total samples, and
the device fingerprint and protocol. Subnets are drawn from ``random.Random(seed)``, so a
rerun draws the same list and skips the keys already in the file: an interrupted collection
resumes, and a larger ``n`` extends it. The file is rewritten atomically after every row.
A file never mixes fingerprints or protocols: resuming on another machine is an error.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automoe.costs.features import latency_feature_names, latency_features
from automoe.costs.flops import flops
from automoe.costs.latency import (
    LatencyProtocol,
    LatencyResult,
    fingerprint_id,
    measure_latency,
    protocol_fingerprint,
)
from automoe.io_utils import atomic_write_csv
from supernet.contracts import SubnetModel

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig
    from search_spaces.space import SearchSpace
    from supernet.transformer import Transformer

__all__ = [
    "collect_latency_dataset",
    "read_latency_dataset",
    "dataset_features",
    "sample_unique",
    "random_model",
]

STAT_COLUMNS = ("latency_ms", "trimmed_mean_ms", "hat_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms",
                "cv", "encoder_median_ms", "decoder_median_ms", "runs", "measure_s")


def sample_unique(space: SearchSpace, n: int, seed: int, *, max_tries_factor: int = 50
                  ) -> list[SubnetConfig]:
    """``n`` distinct configs from ``space.sample`` under ``random.Random(seed)`` (fewer if the
    space is smaller; capped tries)."""
    rng = random.Random(seed)
    seen: dict[str, SubnetConfig] = {}
    for _ in range(max(1, n) * max_tries_factor):
        if len(seen) >= n:
            break
        config = space.sample(rng)
        seen.setdefault(config.key(), config)
    return list(seen.values())


def random_model(config: SubnetConfig, vocab_size: int, *, seed: int = 0, device: str = "cpu",
                 dtype: str = "float32") -> Transformer:
    """A randomly initialised static `Transformer` of ``config`` (latency depends on weight
    values only through MoE routing), on ``device`` in ``dtype``, in eval mode."""
    import torch

    from supernet import Transformer

    model = Transformer(config, vocab_size, seed=seed)
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


def read_latency_dataset(path: str | os.PathLike) -> pd.DataFrame:
    """Reads a dataset CSV and checks it holds one fingerprint and one protocol."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no latency dataset here")
    df = pd.read_csv(p, dtype={"key": str, "fingerprint_id": str, "protocol_key": str})
    missing = [c for c in ("key", "config", "latency_ms", "fingerprint_id", "protocol_key") if c not in df]
    if missing:
        raise ValueError(f"{p}: missing column(s) {missing}; not a latency dataset")
    for col in ("fingerprint_id", "protocol_key"):
        if df[col].nunique() > 1:
            raise ValueError(f"{p}: mixes {df[col].nunique()} values of '{col}' ({sorted(df[col].unique())}); "
                             "one device and one protocol per file")
    return df


def _row(space: SearchSpace, config: SubnetConfig, result: LatencyResult, fp: dict[str, Any]
         ) -> dict[str, Any]:
    d = result.to_dict()
    row: dict[str, Any] = {"key": config.key(), "space": space.name, "config": config.to_json()}
    row.update({f"f_{n}": v for n, v in zip(latency_feature_names(space), latency_features(space, config),
                                            strict=True)})
    row["macs"] = flops(config).macs
    row.update({c: d[c] for c in STAT_COLUMNS})
    row["samples_ms"] = json.dumps([round(x, 4) for x in result.total_ms])
    row["fingerprint_id"] = fingerprint_id(fp)
    row["fingerprint"] = json.dumps(fp, sort_keys=True)
    row["protocol_key"] = result.protocol_key
    row["protocol"] = json.dumps(result.protocol, sort_keys=True)
    return row


def collect_latency_dataset(
    space: SearchSpace,
    n: int,
    out: str | os.PathLike,
    protocol: LatencyProtocol | None = None,
    *,
    seed: int = 0,
    build_model: Callable[[SubnetConfig], SubnetModel] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Measures ``n`` random subnets of ``space`` into the CSV ``out`` (resuming it).

    Args:
        space: a `SearchSpace` (``sample``, ``features``, ``feature_names``, ``name``).
        n: subnets in the finished dataset (already measured ones count).
        out: the CSV path.
        protocol: the latency protocol (default: HAT's on CPU, 20 runs).
        seed: draws the subnets (the same seed resumes the same list).
        build_model: config → model on the protocol's device and dtype (default:
            `random_model` with init seed ``seed``).
        progress: show a tqdm bar.

    Returns:
        The whole dataset (old and new rows).
    """
    from tqdm import tqdm

    p = protocol or LatencyProtocol()
    fp = protocol_fingerprint(p)
    out_path = Path(out)
    rows: list[dict[str, Any]] = []
    if out_path.exists():
        old = read_latency_dataset(out_path)
        if len(old):
            if old["fingerprint_id"].iloc[0] != fingerprint_id(fp):
                raise ValueError(
                    f"{out_path}: measured on fingerprint {old['fingerprint'].iloc[0]}, this run is "
                    f"{json.dumps(fp, sort_keys=True)}; never mix devices (use another --out)"
                )
            if old["protocol_key"].iloc[0] != p.key():
                raise ValueError(
                    f"{out_path}: measured under protocol {old['protocol'].iloc[0]}, this run uses "
                    f"{json.dumps(p.to_dict(), sort_keys=True)}; use the same options or another --out"
                )
            if "space" in old and (old["space"] != space.name).any():
                raise ValueError(f"{out_path}: holds subnets of space {old['space'].iloc[0]!r}, not {space.name!r}")
            want = [f"f_{n}" for n in latency_feature_names(space)]
            if [c for c in old.columns if c.startswith("f_")] != want:
                raise ValueError(f"{out_path}: its feature columns differ from the current "
                                 "features of this space; use another --out")
        rows = old.to_dict("records")
    done = {str(r["key"]) for r in rows}
    configs = sample_unique(space, n, seed)
    todo = [c for c in configs if c.key() not in done]
    if build_model is None:
        def build_model(config: SubnetConfig) -> SubnetModel:
            return random_model(config, p.vocab_size, seed=seed, device=p.device, dtype=p.dtype)
    bar = tqdm(todo, desc=f"latency {space.name}", unit="subnet", disable=not progress,
               initial=len(configs) - len(todo), total=len(configs))
    for config in bar:
        result = measure_latency(build_model(config), p, subnet_key=config.key())
        rows.append(_row(space, config, result, fp))
        _write(out_path, rows)
        bar.set_postfix(ms=f"{result.latency_ms:.1f}")
    bar.close()
    if not out_path.exists():
        _write(out_path, rows)
    return pd.DataFrame(rows)


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_csv(pd.DataFrame(rows), path, float_format=None)


def dataset_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The ``f_*`` columns as a float matrix [N, F] and the feature names (prefix removed)."""
    cols = [c for c in df.columns if c.startswith("f_")]
    if not cols:
        raise ValueError("latency dataset has no feature columns (f_*)")
    return df[cols].to_numpy(dtype=np.float64), [c[2:] for c in cols]
