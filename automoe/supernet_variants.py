"""Which way of training the supernet ranks subnets of equal FLOPs best?

Each variant (sandwich sampling, in-place distillation, a longer schedule, ...) is one
supernet training plus a fidelity study of the *same* subnets that reuses the reference
study's standalone models (``automoe fidelity --standalone-from``), so the variants differ
only in their inherited scores. `compare_variants` ranks them by the within-band Kendall tau
against the same standalone scores, and tests each against the reference supernet with the
paired bootstrap of the tau difference (pairs inside bands, subnets resampled inside their
band), Holm-adjusted over the variants.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automoe.fidelity_report import TARGETS, agreement
from automoe.stats import holm, tau_difference

__all__ = ["compare_variants"]


def _table(study: Path) -> pd.DataFrame:
    path = study / "fidelity.csv"
    if not path.is_file():
        raise ValueError(f"{study}: not a finished fidelity study (no fidelity.csv)")
    return pd.read_csv(path, dtype={"key": str})


def compare_variants(studies: Mapping[str, str | Path], *, reference: str,
                     resamples: int = 2000) -> dict[str, Any]:
    """Per target ("loss", "bleu"): each variant's within-band and overall tau of its
    inherited score against the standalone scores, and for each variant but `reference` the
    paired test of tau(variant) - tau(reference) within bands, with Holm over the variants.

    `studies` maps a variant name to its fidelity study; all must hold the same subnets in
    the same bands with the same standalone scores (ValueError naming the one that does
    not)."""

    if reference not in studies:
        raise ValueError(f"reference variant {reference!r} is not among {sorted(studies)}")
    tables = {name: _table(Path(path)) for name, path in studies.items()}
    base = tables[reference]
    for name, table in tables.items():
        same = (list(table["key"]) == list(base["key"])
                and list(table["band"]) == list(base["band"])
                and np.allclose(table["standalone_loss"], base["standalone_loss"], rtol=1e-9))
        if not same:
            raise ValueError(f"{studies[name]}: other subnets, bands or standalone scores than "
                             f"{studies[reference]}; variants must share one set of trained "
                             "models (automoe fidelity --standalone-from)")
    bands = base["band"].to_numpy()
    out: dict[str, Any] = {"reference": reference, "studies": {k: str(v) for k, v in
                                                               studies.items()},
                           "n": int(len(base)), "bands": int(len(set(bands))),
                           "resamples": resamples}
    for target, (column, sign, inherited) in TARGETS.items():
        truth = sign * base[column].to_numpy(float)
        entry: dict[str, Any] = {}
        for name, table in tables.items():
            x = sign * table[inherited].to_numpy(float)
            entry[name] = {"within_band": agreement(x, truth, bands, resamples),
                           "overall": agreement(x, truth, None, resamples)}
        others = [n for n in tables if n != reference]
        ref_x = sign * tables[reference][inherited].to_numpy(float)
        tests = [tau_difference(sign * tables[n][inherited].to_numpy(float), ref_x, truth,
                                groups=bands, resamples=resamples) for n in others]
        for name, test, adjusted in zip(others, tests, holm([t["p_value"] for t in tests]),
                                        strict=True):
            entry[name]["minus_reference"] = {**test, "p_holm": adjusted}
        out[target] = entry
    return out
