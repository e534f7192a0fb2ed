"""automoe.supernet_variants: supernet variants compared on one set of standalone models,
against synthetic studies whose answer is known and brute-force pair counting."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from automoe.supernet_variants import compare_variants


def _study(root, name: str, inherited: np.ndarray, standalone: np.ndarray, bands: np.ndarray):
    path = root / name
    path.mkdir()
    pd.DataFrame({"key": [f"{i:016x}" for i in range(len(bands))], "band": bands,
                  "inherited_loss": inherited, "standalone_loss": standalone,
                  "inherited_bleu": -inherited, "standalone_bleu": -standalone}).to_csv(
        path / "fidelity.csv", index=False)
    return path


def test_a_variant_that_ranks_as_training_does_beats_one_that_does_not(tmp_path):
    rng = np.random.default_rng(0)
    bands = np.repeat([0, 1, 2], 10)
    truth = rng.normal(size=30) + 5 * bands
    studies = {"plain": _study(tmp_path, "plain", rng.normal(size=30) + 5 * bands, truth, bands),
               "good": _study(tmp_path, "good", truth + 0.05 * rng.normal(size=30), truth,
                              bands),
               "same": _study(tmp_path, "same", rng.normal(size=30) + 5 * bands, truth, bands)}
    report = compare_variants(studies, reference="plain", resamples=500)
    loss = report["loss"]
    pairs = [(i, j) for i, j in itertools.combinations(range(30), 2) if bands[i] == bands[j]]
    inh = -pd.read_csv(studies["good"] / "fidelity.csv")["inherited_loss"].to_numpy()
    want = np.mean([np.sign(inh[i] - inh[j]) * np.sign(-truth[i] + truth[j]) for i, j in pairs])
    assert loss["good"]["within_band"]["tau"] == pytest.approx(want)
    assert loss["good"]["within_band"]["tau"] > 0.8
    assert loss["good"]["minus_reference"]["delta"] > 0.5
    assert loss["good"]["minus_reference"]["p_holm"] < 0.05
    assert loss["same"]["minus_reference"]["p_holm"] > 0.05  # noise is not better noise
    assert loss["good"]["minus_reference"]["p_holm"] >= loss["good"]["minus_reference"]["p_value"]
    assert "minus_reference" not in loss["plain"]


def test_variants_must_share_their_standalone_models(tmp_path):
    bands = np.repeat([0, 1], 4)
    truth = np.arange(8.0)
    studies = {"plain": _study(tmp_path, "plain", truth, truth, bands),
               "other": _study(tmp_path, "other", truth, truth + 1, bands)}
    with pytest.raises(ValueError, match="share one set of trained models"):
        compare_variants(studies, reference="plain")
    with pytest.raises(ValueError, match="reference variant 'x'"):
        compare_variants(studies, reference="x")
