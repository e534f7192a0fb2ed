"""Latency predictor: metrics against brute-force oracles, fitting on a synthetic dataset
with known structure, persistence (JSON + safetensors, identical predictions after reload).
The analytic kind against a layer-by-layer simulated device: tests/test_latency_tables.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from automoe.costs.metrics import kendall_tau, mape, rmse
from automoe.costs.predictor import KINDS, LatencyPredictor, PredictorConfig, fit_predictor

FAST = PredictorConfig(hidden_dim=64, hidden_layers=2, steps=400, eval_every=25, lr=3e-3)
FAST_ALL = PredictorConfig(hidden_dim=64, hidden_layers=2, steps=400, eval_every=25, lr=3e-3,
                           kind="auto")


def _naive_tau_b(x, y):
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if a == 0 and b == 0:
            continue
        if a == 0:
            tx += 1
        elif b == 0:
            ty += 1
        elif a == b:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=25).astype(float)  # many ties
    y = x + rng.integers(-2, 3, size=25)
    assert kendall_tau(x, y) == pytest.approx(_naive_tau_b(x, y), abs=1e-12)


def test_metric_values():
    assert kendall_tau(np.arange(5), np.arange(5)[::-1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau(np.ones(4), np.arange(4)))
    assert mape(np.array([100.0, 200.0]), np.array([110.0, 180.0])) == pytest.approx(10.0)
    assert rmse(np.array([0.0, 0.0]), np.array([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))
    with pytest.raises(ValueError, match="target is 0"):
        mape(np.array([0.0]), np.array([1.0]))


def _synthetic(n: int, seed: int):
    """Latency with a known structure: linear in two features, a product term, a useless
    feature and a constant one, plus 1% multiplicative noise."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([
        rng.choice([128, 256, 512], n),       # width
        rng.integers(1, 7, n),                # layers
        rng.uniform(0, 1, n),                 # noise feature
        np.full(n, 3.0),                      # constant feature
        rng.integers(1, 5, n),                # experts
    ]).astype(float)
    y = 2.0 + 0.01 * x[:, 0] * x[:, 1] + 1.5 * x[:, 1] + 0.5 * x[:, 4]
    y *= 1 + 0.01 * rng.standard_normal(n)
    return x, y


def test_predictor_beats_constant_baseline_on_known_structure():
    x, y = _synthetic(300, seed=0)
    names = ["width", "layers", "noise", "const", "experts"]
    predictor, report = fit_predictor(x, y, names, FAST_ALL, meta={"device": "synthetic"})
    test = report["test"]
    assert report["n_train"] + report["n_val"] + report["n_test"] == 300
    for kind in KINDS:
        assert test[kind]["mape"] < test["constant"]["mape"] / 3
        assert test[kind]["kendall_tau"] > 0.85
    # the product term is in no kind's basis but the MLP's, which fits it best
    assert test["mlp"]["rmse"] < min(test["linear"]["rmse"], test["analytic"]["rmse"])
    assert report["selected"] == "mlp" == predictor.kind
    # fresh subnets from the same distribution: a real generalisation check
    x2, y2 = _synthetic(200, seed=1)
    assert mape(y2, predictor.predict_features(x2)) < 5.0


def test_linear_part_is_least_squares():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = 10 + x @ np.array([1.0, -2.0, 0.5])  # exactly linear
    predictor, report = fit_predictor(x, y, ["a", "b", "c"], FAST)
    for kind in ("linear", "analytic"):  # any other features are the analytic kind's basis
        assert report["test"][kind]["rmse"] < 1e-9
        assert np.allclose(predictor.predict_features(x, kind), y, rtol=1e-12)
    assert report["analytic_basis"] == "identity"


@pytest.mark.parametrize("config", [FAST, FAST_ALL], ids=["default", "auto"])
def test_save_load_roundtrip(tmp_path, config):
    x, y = _synthetic(80, seed=2)
    predictor, _ = fit_predictor(x, y, list("abcde"), config, meta={"space": "tiny"})
    predictor.save(tmp_path / "pred")
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "predictor.json", "predictor.safetensors"]  # JSON and safetensors: nothing pickled
    loaded = LatencyPredictor.load(tmp_path / "pred")
    assert loaded.kind == predictor.kind and loaded.feature_names == predictor.feature_names
    assert loaded.kinds == predictor.kinds
    assert loaded.meta["space"] == "tiny" and "report" in loaded.meta
    for kind in loaded.kinds:
        assert np.array_equal(loaded.predict_features(x, kind), predictor.predict_features(x, kind))
    if "mlp" not in loaded.kinds:
        with pytest.raises(ValueError, match="holds no mlp model"):
            loaded.predict_features(x, "mlp")


def test_predict_from_configs_and_feature_checks():
    import random

    from automoe.costs.features import latency_feature_names, latency_features
    from search_spaces import load_space

    space = load_space("tiny")
    rng = random.Random(0)
    configs = [space.sample(rng) for _ in range(40)]
    x = np.array([latency_features(space, c) for c in configs])
    names = latency_feature_names(space)
    assert x.shape == (40, len(names)) and names[-1] == "macs_decoder_router"
    y = 1 + x[:, names.index("macs_decoder_ffn")] / 1e4 + x[:, names.index("encoder_layers")]
    predictor, _ = fit_predictor(x, y, names, FAST)
    assert np.allclose(predictor.predict(configs, space), predictor.predict_features(x))
    with pytest.raises(ValueError, match="trained on"):
        predictor.predict(configs[:1], load_space("demo"))
    with pytest.raises(ValueError, match=r"shape \[N, "):
        predictor.predict_features(np.ones((3, 5)))
    with pytest.raises(ValueError, match="latencies finite and > 0"):
        fit_predictor(x, -y, names, FAST)
    with pytest.raises(ValueError, match="at least 5"):
        fit_predictor(x[:3], y[:3], names, FAST)
    with pytest.raises(ValueError, match="kind 'trees'"):
        PredictorConfig(kind="trees")


def test_training_is_reproducible_and_leaves_global_rng_alone():
    import torch

    x, y = _synthetic(60, seed=4)
    cfg = PredictorConfig(hidden_dim=32, hidden_layers=1, steps=60, eval_every=20, kind="mlp")
    state = torch.random.get_rng_state()
    p1, _ = fit_predictor(x, y, list("abcde"), cfg)
    assert torch.equal(state, torch.random.get_rng_state())
    p2, _ = fit_predictor(x, y, list("abcde"), cfg)
    assert np.array_equal(p1.predict_features(x, "mlp"), p2.predict_features(x, "mlp"))


def test_a_predictor_saved_before_the_analytic_kind_still_loads(tmp_path):
    """Format 1 (an MLP and the linear model, no analytic terms) loads and predicts as
    saved; an unknown format is refused."""
    import json

    from safetensors.torch import load_file, save_file

    x, y = _synthetic(60, seed=5)
    predictor, _ = fit_predictor(x, y, list("abcde"), FAST_ALL)
    predictor.kind = "mlp"
    folder = predictor.save(tmp_path / "old")
    tensors = {k: v for k, v in load_file(folder / "predictor.safetensors").items()
               if not k.startswith("analytic_")}
    save_file(tensors, folder / "predictor.safetensors")
    doc = json.loads((folder / "predictor.json").read_text())
    del doc["config"]["kind"]
    (folder / "predictor.json").write_text(json.dumps({**doc, "format_version": 1}))
    old = LatencyPredictor.load(folder)
    assert old.kinds == ("linear", "mlp") and old.kind == "mlp"
    assert np.array_equal(old.predict_features(x), predictor.predict_features(x, "mlp"))
    (folder / "predictor.json").write_text(json.dumps({**doc, "format_version": 3}))
    with pytest.raises(ValueError, match="format_version 3"):
        LatencyPredictor.load(folder)
