"""`automoe fidelity`: inherited vs standalone scores, stratified choice, resumable study.

The choice of subnets is checked against a brute-force binning of the pool; the study runs
end to end on the `tiny` space (few updates) through the CLI, with its second standalone
trial SIGKILLed after its first report: the study stops with a one-line error, ``--resume``
finishes it without retraining the finished trial, and the correlations in fidelity.json
are recomputed from fidelity.csv with a brute-force Kendall tau.
"""

from __future__ import annotations

import itertools
import json
import random
import threading

import numpy as np
import pandas as pd
import pytest
from search_helpers import kill_after_first_report, make_world

from automoe.cli import main
from automoe.costs.flops import flops as count_flops
from automoe.fidelity import FIDELITY_COLUMNS, choose_subnets
from search_spaces import load_space

pytestmark = pytest.mark.slow

TRAIN = ["--max-updates", "6", "--warmup-updates", "1", "--max-tokens", "256",
         "--valid-sentences", "8", "--report-every", "2", "--beam", "2", "--test-sentences", "4"]


def test_choice_has_references_dense_and_moe_stratified_over_flops():
    space = load_space("demo")
    chosen = choose_subnets(space, subnets=16, dense=4, seed=3, pool=400)
    roles = [r for r, _ in chosen]
    refs = space.dense_baselines()
    assert roles[:len(refs)] == list(refs)
    assert roles.count("dense") == 4 and roles.count("moe") == 16 - 4 - len(refs)
    keys = [c.key() for _, c in chosen]
    assert len(set(keys)) == 16
    assert all(c.is_dense for r, c in chosen if r == "dense")
    assert not any(c.is_dense for r, c in chosen if r == "moe")
    # brute force: redraw the MoE pool as the function does and bin it by FLOPs
    rng = random.Random(3)
    for _ in range(400):
        space.sample_dense(rng)
    pool = {}
    for _ in range(400):
        c = space.sample(rng)
        if not c.is_dense and c.key() not in refs:
            pool.setdefault(c.key(), c)
    flops = [count_flops(c).flops for c in pool.values()]
    lo, hi = min(flops), max(flops)
    k = roles.count("moe")
    bins = {min(k - 1, int((f - lo) / ((hi - lo) / k))) for f in flops}
    picked = [min(k - 1, int((count_flops(c).flops - lo) / ((hi - lo) / k)))
              for r, c in chosen if r == "moe"]
    if len(bins) == k:  # every bin populated: exactly one subnet per bin
        assert sorted(picked) == list(range(k))
    with pytest.raises(ValueError, match="no room for an MoE subnet"):
        choose_subnets(space, subnets=5, dense=4, seed=0)


def _brute_tau(x, y) -> float:
    s = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
         for i, j in itertools.combinations(range(len(x)), 2)]
    return float(sum(s)) / len(s)


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("fidelity")
    supernet, data = make_world(root)
    out = root / "study"
    chosen = choose_subnets(load_space("tiny"), subnets=5, dense=1, seed=0)
    keys = [c.key() for _, c in chosen]
    kill: dict = {}
    killer = threading.Thread(target=kill_after_first_report, args=(
        out / "retrain" / "tune" / f"trial_{keys[1]}" / "result.json", kill), daemon=True)
    killer.start()
    argv = ["fidelity", str(supernet), "--data", str(data), "--out", str(out), "--subnets", "5",
            "--dense", "1", "--concurrent", "1", "--max-failures", "0", "--bootstrap", "200",
            "-q", *TRAIN]
    rc1 = main(argv)
    killer.join(timeout=5)
    first_model = out / "retrain" / "models" / keys[0] / "model" / "model.safetensors"
    stamp = first_model.stat().st_mtime_ns
    partial = sorted(p.name for p in (out / "retrain" / "models").iterdir())
    rc2 = main([*argv, "--resume"])
    return {"out": out, "keys": keys, "rc": (rc1, rc2), "kill": kill, "stamp": stamp,
            "first_model": first_model, "partial": partial}


def test_interrupted_study_resumes_without_redoing_finished_trials(study):
    assert study["kill"].get("killed"), "the second trial was not killed mid-training"
    assert study["rc"] == (2, 0)
    assert study["first_model"].stat().st_mtime_ns == study["stamp"]  # not retrained
    out = study["out"]
    trained = pd.read_csv(out / "retrained.csv", dtype={"key": str})
    assert (trained["status"] == "finished").all() and (trained["updates"] == 6).all()
    assert set(trained["key"]) == set(study["keys"])


def test_fidelity_files_hold_the_columns_and_taus_recomputed_from_the_csv(study):
    out = study["out"]
    table = pd.read_csv(out / "fidelity.csv", dtype={"key": str})
    report = json.loads((out / "fidelity.json").read_text())
    assert list(table.columns) == list(FIDELITY_COLUMNS)
    assert list(table["key"]) == study["keys"] and table["is_dense"].sum() >= 2
    assert table[["inherited_loss", "standalone_loss", "inherited_loss_se",
                  "standalone_loss_se", "flops"]].notna().all().all()
    truth = -table["standalone_loss"].to_numpy()
    for name, column, sign in (("inherited", "inherited_loss", -1), ("flops", "flops", 1),
                               ("params_active", "params_active", 1)):
        x = sign * table[column].to_numpy()
        if np.ptp(x) > 0:
            assert report["loss"][name]["tau"] == pytest.approx(_brute_tau(x, truth))
    inh = report["loss"]["inherited"]
    assert inh["tau_lo"] <= inh["tau"] <= inh["tau_hi"] and report["n"] == 5
    # standalone scores are the trained models' own: a re-score of one matches the table
    from automoe.search.scoring import DevScorer, ScoringSettings
    from supernet import Transformer

    key = study["keys"][0]
    model = Transformer.load(out / "retrain" / "models" / key / "model").eval()
    dev = DevScorer(json.loads((out / "search.json").read_text())["settings"]["data"],
                    ScoringSettings(bleu=False), label_smoothing=0.1)
    assert dev.score(model)["loss"] == pytest.approx(table.loc[0, "standalone_loss"], rel=1e-6)
    assert (out / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_nll_is_the_models_likelihood_of_each_test_sentence_alone(study):
    """`automoe.study.test_nll` (batched, padded, the test split) against a forward pass of
    each test sentence on its own: src + EOS, BOS + target, target + EOS."""
    import torch

    from automoe.data import load_split
    from automoe.study import test_nll
    from supernet import Transformer
    from supernet.tokens import BOS_ID, EOS_ID

    out = study["out"]
    data = json.loads((out / "search.json").read_text())["settings"]["data"]
    model_dir = out / "retrain" / "models" / study["keys"][0] / "model"
    nll, tokens = test_nll(model_dir, 7, data=data)
    model = Transformer.load(model_dir).eval()
    test = load_split(data, "test")
    assert len(nll) == len(tokens) == 7
    for i in range(7):
        src, tgt = list(test.src[i]), list(test.tgt[i])
        with torch.no_grad():
            logits, _ = model(torch.tensor([src + [EOS_ID]]), torch.tensor([[BOS_ID] + tgt]))
        target = torch.tensor(tgt + [EOS_ID])
        want = torch.nn.functional.cross_entropy(logits[0].double(), target, reduction="sum")
        assert tokens[i] == len(tgt) + 1
        assert nll[i] == pytest.approx(want.item(), rel=1e-5)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    supernet, data = make_world(tmp_path)
    out = tmp_path / "study"
    assert main(["fidelity", str(supernet), "--data", str(data), "--out", str(out),
                 "--subnets", "3", "--dense", "1"]) == 2
    assert "no room for an MoE subnet" in capsys.readouterr().err
    assert not out.exists()
    assert main(["fidelity", str(supernet), "--data", str(data), "--out", str(out),
                 "--resume"]) == 2
    assert "no fidelity study to resume" in capsys.readouterr().err
    assert main(["fidelity", str(supernet), "--data", str(tmp_path / "nope"), "--out",
                 str(out)]) == 2
    assert not out.exists()
