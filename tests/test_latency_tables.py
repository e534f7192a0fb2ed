"""Latency predictors from tables measured elsewhere (HAT's format or any columns):
features from a HAT SubTransformer YAML against a hand-computed vector, fit and predict
against the linear law a synthetic table was drawn from, and every bad table refused in one
line with exit 2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automoe.cli import main
from automoe.costs.latency_tables import HAT_FEATURES, hat_features, read_latency_table
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
WEIGHTS = np.array([0.01, 3.0, 0.002, 0.5, 0.02, 40.0, 0.004, 1.0, 0.8, 5.0])


def test_hat_features_of_a_hat_yaml_equal_the_hand_computed_vector(tmp_path):
    path = tmp_path / "pi.yml"
    path.write_text(HAT_YAML, encoding="utf-8")
    config = import_hat_yaml(path, load_space("hat_wmt14"))
    want = [512, 6, (1024 + 3072 * 2 + 2048 * 3) / 6, (4 * 4 + 8 * 2) / 6,
            512, 1, 3072, 8, 8, 1]  # HAT's YAML -1: the last encoder layer only, 1 layer
    assert hat_features(config) == pytest.approx(want)


def hat_table(path, n: int = 120, seed: int = 0) -> np.ndarray:
    """A HAT-format table whose latency is a known linear function of its features."""
    rng = np.random.default_rng(seed)
    space = load_space("hat_wmt14")
    import random

    r = random.Random(seed)
    x = np.array([hat_features(space.sample(r)) for _ in range(n)])
    total = x @ WEIGHTS + 20.0
    enc = total * 0.3
    frame = pd.DataFrame(x, columns=list(HAT_FEATURES))
    frame["latency_mean_encoder"] = enc
    frame["latency_mean_decoder"] = total - enc
    frame["latency_std_encoder"] = enc * 0.01
    frame["latency_std_decoder"] = (total - enc) * 0.02 * rng.uniform(0.5, 1.5, n)
    frame.to_csv(path, index=False)
    return x


def test_fit_and_predict_on_a_hat_table(tmp_path, capsys):
    table = tmp_path / "xeon.csv"
    hat_table(table)
    out = tmp_path / "pred"
    assert main(["latency", "fit", str(table), "--format", "hat", "-o", str(out), "--steps",
                 "200", "--json"]) == 0
    capsys.readouterr()
    yml = tmp_path / "pi.yml"
    yml.write_text(HAT_YAML, encoding="utf-8")
    config = import_hat_yaml(yml, load_space("hat_wmt14"))
    (tmp_path / "pi.json").write_text(config.to_json())
    assert main(["latency", "predict", str(out), str(yml), str(tmp_path / "pi.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    truth = np.array(hat_features(config)) @ WEIGHTS + 20.0
    values = [float(line.split("\t")[0]) for line in lines]
    assert values[0] == values[1] == pytest.approx(truth, rel=0.02)  # a linear law: found
    # --table: one prediction per row, extra columns ignored
    rows = pd.read_csv(table).head(3).assign(note="x")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["latency", "predict", str(out), "--table", str(tmp_path / "rows.csv")]) == 0
    got = [float(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    want = rows["latency_mean_encoder"] + rows["latency_mean_decoder"]
    assert got == pytest.approx(want.tolist(), rel=0.02)
    from automoe.costs.predictor import LatencyPredictor

    meta = LatencyPredictor.load(out).meta
    assert meta["format"] == "hat" and meta["noise_floor_mape"] > 0


def test_any_columns_and_the_search_space_predictor_path(tmp_path, capsys):
    table = tmp_path / "mine.csv"
    x = hat_table(table)
    frame = pd.read_csv(table).rename(columns={"encoder_embed_dim": "width"})
    frame.to_csv(table, index=False)
    cols = ",".join(["width", *HAT_FEATURES[1:]])
    assert main(["latency", "fit", str(table), "--format", "columns", "--features", cols,
                 "--target", "latency_mean_encoder,latency_mean_decoder", "-o",
                 str(tmp_path / "p"), "--steps", "100"]) == 0
    loaded = read_latency_table(table, fmt="columns", features=cols.split(","),
                                target=["latency_mean_encoder", "latency_mean_decoder"])
    assert loaded.y == pytest.approx(x @ WEIGHTS + 20.0)
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
    with pytest.raises(SystemExit) as exit_:  # argparse's own one-line error
        main(["latency", "fit", str(table), "--format", "parquet", "-o", str(tmp_path / "p")])
    assert exit_.value.code == 2
    assert "invalid choice: 'parquet'" in capsys.readouterr().err
