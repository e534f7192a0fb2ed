"""Latency predictors from tables measured elsewhere (HAT's format or any columns):
features from a HAT SubTransformer YAML against a hand-computed vector; fit and predict
against a layer-by-layer latency simulator the synthetic tables are drawn from (the default
analytic kind recovers it exactly from HAT's averaged features, and past a block of rows
measured in a slow session); every bad table refused in one line with exit 2."""

from __future__ import annotations

import random
from statistics import fmean

import numpy as np
import pandas as pd
import pytest

from automoe.cli import main
from automoe.costs.analytic import HAT_LAYER_TERMS, hat_layer_terms
from automoe.costs.latency_tables import HAT_FEATURES, hat_features, read_latency_table
from automoe.costs.predictor import DEFAULT_KIND, KINDS, LatencyPredictor, fit_predictor
from search_spaces import load_space
from search_spaces.importers import import_hat_yaml

# HAT's released WMT'14 En-De SubTransformer for the Raspberry Pi at 3.5 s (its YAML)
HAT_YAML = """\
encoder-embed-dim-subtransformer: 512
decoder-embed-dim-subtransformer: 512
encoder-ffn-embed-dim-all-subtransformer: [1024, 3072, 3072, 2048, 2048, 2048]
decoder-ffn-embed-dim-all-subtransformer: [3072]
encoder-layer-num-subtransformer: 6
decoder-layer-num-subtransformer: 1
encoder-self-attention-heads-all-subtransformer: [4, 8, 4, 4, 4, 8]
decoder-self-attention-heads-all-subtransformer: [8]
decoder-ende-attention-heads-all-subtransformer: [8]
decoder-arbitrary-ende-attn-all-subtransformer: [-1]
"""


def simulated_latency(c) -> float:
    """A device simulated layer by layer from the config itself (not from HAT's averages):
    a per-run part, then each encoder layer and each of 30 decoder steps through every
    decoder layer, every cost linear in the layer's own widths with slopes that depend on
    the stack's embedding width (ms)."""
    de, dd = c.encoder_embed_dim, c.decoder_embed_dim
    t = 3.0 + 0.004 * dd  # embeddings and the output projection
    for dims, heads in zip(c.encoder_expert_dims, c.encoder_heads, strict=True):
        t += 0.5 + 0.001 * de + fmean(dims) * (2e-4 + 1e-6 * de) + heads * (0.05 + 1e-4 * de)
    for dims, heads, cross, attended in zip(c.decoder_expert_dims, c.decoder_heads,
                                            c.decoder_cross_heads, c.decoder_ende_attn,
                                            strict=True):
        t += 30 * (0.2 + 5e-4 * dd + fmean(dims) * (1e-4 + 5e-7 * dd) + heads * 0.01
                   + cross * (0.02 + 1e-5 * dd) + attended * (0.1 + 2e-4 * dd))
    return t


def test_hat_features_of_a_hat_yaml_equal_the_hand_computed_vector(tmp_path):
    path = tmp_path / "pi.yml"
    path.write_text(HAT_YAML, encoding="utf-8")
    config = import_hat_yaml(path, load_space("hat_wmt14"))
    want = [512, 6, (1024 + 3072 * 2 + 2048 * 3) / 6, (4 * 4 + 8 * 2) / 6,
            512, 1, 3072, 8, 8, 1]  # HAT's YAML -1: the last encoder layer only, 1 layer
    assert hat_features(config) == pytest.approx(want)


def hat_table(path, n: int = 120, seed: int = 0) -> np.ndarray:
    """A HAT-format table of random `hat_wmt14` configs timed by `simulated_latency`;
    returns the latencies [n]."""
    rng = np.random.default_rng(seed)
    space, r = load_space("hat_wmt14"), random.Random(seed)
    configs = [space.sample(r) for _ in range(n)]
    x = np.array([hat_features(c) for c in configs])
    total = np.array([simulated_latency(c) for c in configs])
    enc = total * 0.3
    frame = pd.DataFrame(x, columns=list(HAT_FEATURES))
    frame["latency_mean_encoder"] = enc
    frame["latency_mean_decoder"] = total - enc
    frame["latency_std_encoder"] = enc * 0.01
    frame["latency_std_decoder"] = (total - enc) * 0.02 * rng.uniform(0.5, 1.5, n)
    frame.to_csv(path, index=False)
    return total


def test_hat_layer_terms_against_hand_computed_products():
    row = np.array([[640, 6, 2048, 4, 512, 3, 1024, 8, 2, 1.5]], dtype=float)
    terms = dict(zip(HAT_LAYER_TERMS, hat_layer_terms(row)[0], strict=True))
    assert len(terms) == 18
    assert terms["encoder_embed_dim"] == 640 and terms["decoder_embed_dim"] == 512
    assert terms["encoder_layer_num*encoder_ffn_embed_dim_avg*encoder_embed_dim"] == 6 * 2048 * 640
    assert terms["decoder_layer_num*decoder_embed_dim"] == 3 * 512
    assert terms["decoder_layer_num*decoder_arbitrary_ende_attn_avg"] == 3 * 1.5
    with pytest.raises(ValueError, match=r"expected \[N, 10\]"):
        hat_layer_terms(np.ones((2, 9)))


def test_analytic_kind_recovers_the_simulated_device_past_a_slow_session():
    """The simulator's latency is exactly a sum of `hat_layer_terms` (each stack's sum of
    per-layer costs is its depth times the cost at the average widths), so the analytic fit
    on HAT's averaged features predicts fresh configs to 1e-6. Its loss (absolute relative
    error) ignores a block of training rows timed 30 % slow, where least squares on the
    same terms does not."""
    space, r = load_space("hat_wmt14"), random.Random(1)
    configs, fresh = [space.sample(r) for _ in range(300)], [space.sample(r) for _ in range(100)]
    x = np.array([hat_features(c) for c in configs])
    y = np.array([simulated_latency(c) for c in configs])
    x_new = np.array([hat_features(c) for c in fresh])
    y_new = np.array([simulated_latency(c) for c in fresh])
    predictor, report = fit_predictor(x, y, HAT_FEATURES)
    assert predictor.kind == DEFAULT_KIND == "analytic" and report["analytic_basis"] == "hat_layers"
    np.testing.assert_allclose(predictor.predict_features(x_new), y_new, rtol=1e-6)
    slow = y.copy()
    slow[:15] *= 1.3  # 15 consecutive rows of the 270 training rows: a slow session
    split = (np.r_[0:15, 45:300], np.arange(15, 30), np.arange(30, 45))
    predictor, _ = fit_predictor(x, slow, HAT_FEATURES, split=split)
    np.testing.assert_allclose(predictor.predict_features(x_new), y_new, rtol=1e-5)
    design = np.hstack([hat_layer_terms(x[split[0]]), np.ones((len(split[0]), 1))])
    coef = np.linalg.lstsq(design, slow[split[0]], rcond=None)[0]
    least_squares = np.hstack([hat_layer_terms(x_new), np.ones((len(x_new), 1))]) @ coef
    assert np.max(np.abs(least_squares / y_new - 1)) > 1e-2


def test_fit_and_predict_on_a_hat_table(tmp_path, capsys):
    table = tmp_path / "xeon.csv"
    hat_table(table)
    out = tmp_path / "pred"
    assert main(["latency", "fit", str(table), "--format", "hat", "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    yml = tmp_path / "pi.yml"
    yml.write_text(HAT_YAML, encoding="utf-8")
    config = import_hat_yaml(yml, load_space("hat_wmt14"))
    (tmp_path / "pi.json").write_text(config.to_json())
    assert main(["latency", "predict", str(out), str(yml), str(tmp_path / "pi.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    values = [float(line.split("\t")[0]) for line in lines]  # printed to 3 decimals
    assert values[0] == values[1] == pytest.approx(simulated_latency(config), abs=1e-3)
    # --table: one prediction per row, extra columns ignored
    rows = pd.read_csv(table).head(3).assign(note="x")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["latency", "predict", str(out), "--table", str(tmp_path / "rows.csv")]) == 0
    got = [float(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    want = rows["latency_mean_encoder"] + rows["latency_mean_decoder"]
    assert got == pytest.approx(want.tolist(), abs=1e-3)
    loaded = LatencyPredictor.load(out)
    assert loaded.meta["format"] == "hat" and loaded.meta["noise_floor_mape"] > 0
    assert loaded.kind == "analytic" and loaded.kinds == ("analytic", "linear")  # no MLP


@pytest.mark.parametrize("kind", ["linear", "mlp", "auto"])
def test_fit_kind(tmp_path, capsys, kind):
    table = tmp_path / "t.csv"
    hat_table(table, n=60)
    out = tmp_path / "p"
    assert main(["latency", "fit", str(table), "--format", "hat", "-o", str(out), "--kind", kind,
                 "--steps", "20", "--hidden-dim", "16", "--hidden-layers", "1"]) == 0
    text = capsys.readouterr().out
    loaded = LatencyPredictor.load(out)
    fitted = ("analytic", "linear", "mlp") if kind in ("mlp", "auto") else ("analytic", "linear")
    assert loaded.kinds == fitted and all(f"\n{k} " in text for k in (*fitted, "constant"))
    if kind == "auto":
        report = loaded.meta["report"]
        assert loaded.kind == min(fitted, key=lambda k: report["val"][k]["mape"])
        assert "lowest validation MAPE" in text
    else:
        assert loaded.kind == kind and "(--kind)" in text


def test_cli_kinds_are_the_predictors(tmp_path):
    """`latency fit --kind` offers the predictor's kinds; left out, the predictor's default."""
    from automoe.cli import build_parser

    args = build_parser().parse_args(["latency", "fit", "t.csv", "-o", str(tmp_path / "p")])
    assert args.kind is None
    for kind in (*KINDS, "auto"):
        assert build_parser().parse_args(["latency", "fit", "t.csv", "-o", "p", "--kind",
                                          kind]).kind == kind


def test_any_columns_and_the_search_space_predictor_path(tmp_path, capsys):
    table = tmp_path / "mine.csv"
    y = hat_table(table)
    frame = pd.read_csv(table).rename(columns={"encoder_embed_dim": "width"})
    frame.to_csv(table, index=False)
    cols = ",".join(["width", *HAT_FEATURES[1:]])
    assert main(["latency", "fit", str(table), "--format", "columns", "--features", cols,
                 "--target", "latency_mean_encoder,latency_mean_decoder", "-o",
                 str(tmp_path / "p"), "--steps", "100"]) == 0
    loaded = read_latency_table(table, fmt="columns", features=cols.split(","),
                                target=["latency_mean_encoder", "latency_mean_decoder"])
    assert loaded.y == pytest.approx(y)
    (tmp_path / "c.json").write_text(load_space("hat_wmt14").largest().to_json())
    capsys.readouterr()
    assert main(["latency", "predict", str(tmp_path / "p"), str(tmp_path / "c.json")]) == 2
    assert "predicts rows of a table" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns=["latency_mean_decoder"]), "missing column(s) ['latency_mean_decoder']"),
    (lambda f: f.head(0), "no rows"),
    (lambda f: f.assign(decoder_layer_num=["x"] + [1] * (len(f) - 1)),
     "row 2, column 'decoder_layer_num': 'x' is not a finite number"),
    (lambda f: f.assign(latency_mean_encoder=-f["latency_mean_decoder"]), "expected > 0"),
])
def test_bad_tables_are_one_line_and_exit_2(tmp_path, capsys, edit, message):
    table = tmp_path / "t.csv"
    hat_table(table, n=10)
    edit(pd.read_csv(table)).to_csv(table, index=False)
    assert main(["latency", "fit", str(table), "--format", "hat", "-o",
                 str(tmp_path / "p"), "--steps", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(table) in err and "\n" not in err
    assert not (tmp_path / "p").exists()
    for flag, value in (("--format", "parquet"), ("--kind", "trees")):
        with pytest.raises(SystemExit) as exit_:  # argparse's own one-line error
            main(["latency", "fit", str(table), flag, value, "-o", str(tmp_path / "p")])
        assert exit_.value.code == 2
        assert f"invalid choice: '{value}'" in capsys.readouterr().err
