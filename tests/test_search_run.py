"""`automoe search` end to end on the serial path: tables checked against independent
oracles, a real process kill + resume giving the same result, and every bad input failing
early with a clear message. The Ray path is in test_ray_search.py."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from search_helpers import make_world

from automoe.cli import main
from search_spaces import SubnetConfig

GENERATIONS = 4
COMMON = ["--objectives", "loss,flops", "--population", "6", "--dev-sentences", "8",
          "--workers", "0", "--seed", "3", "--quiet"]
DETERMINISTIC_DROP = ["worker", "eval_seconds"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def _args(world, *extra):
    supernet, data = world
    return ["search", "--supernet", str(supernet), "--data", str(data), *COMMON, *extra]


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(_args(world, "--out", str(out), "--generations", str(GENERATIONS))) == 0
    return out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_tables_match_brute_force_front_and_costs(full_run):
    table = pd.read_csv(full_run / "candidates.csv")
    pareto = pd.read_csv(full_run / "pareto.csv")
    meta = json.loads((full_run / "search.json").read_text())
    assert meta["status"] == "finished" and meta["generations_done"] == GENERATIONS
    assert meta["evaluations"] == len(table) == table["key"].nunique()
    assert sorted(table["generation"].unique()) == list(range(GENERATIONS))
    # Front by brute force over every candidate (loss min, flops min).
    pts = np.c_[table["loss"], table["flops"]]
    dominated = [any((q <= p).all() and (q < p).any() for q in pts) for p in pts]
    expected = set(table["key"][~np.array(dominated)])
    assert set(pareto["key"]) == expected == set(table["key"][table["on_front"]])
    assert list(pareto["loss"]) == sorted(pareto["loss"])  # best first by the 1st objective
    assert "worker" not in pareto and "worker" in table
    assert "bleu" not in table  # decoding is skipped when no objective needs it
    # FLOPs and keys recomputed from the stored config JSON.
    from automoe.costs.flops import flops

    for _, row in table.iterrows():
        config = SubnetConfig.from_json(row["config"])
        assert config.key() == row["key"]
        assert row["flops"] == pytest.approx(flops(config).flops, rel=1e-9)
        assert row["is_dense"] == config.is_dense


def test_dev_nll_equals_extracted_model_teacher_forcing(full_run, world):
    """The score of a row is the dev NLL of the *extracted* subnet (another code path than
    the supernet view the scorer uses), sentence by sentence, without batching."""
    row = pd.read_csv(full_run / "candidates.csv").iloc[0]
    assert row["nll"] == pytest.approx(_extracted_nll(world, row["config"]), rel=1e-4)


def _extracted_nll(world, config_json: str, sentences: int = 8) -> float:
    """Dev NLL per token of the extracted subnet, sentence by sentence (no batching)."""
    from automoe.checkpoints import load_supernet
    from automoe.data import load_split
    from supernet.tokens import BOS_ID, EOS_ID

    supernet, data = world
    model, _ = load_supernet(supernet)
    valid = load_split(data, "valid")
    sub = model.extract(SubnetConfig.from_json(config_json)).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(sentences):
            src = torch.tensor([list(valid.src[i]) + [EOS_ID]])
            tgt = list(valid.tgt[i])
            logits, _ = sub(src, torch.tensor([[BOS_ID] + tgt]))
            total += float(F.cross_entropy(logits[0], torch.tensor(tgt + [EOS_ID]),
                                           reduction="sum"))
            tokens += len(tgt) + 1
    return total / tokens


def test_baselines_are_the_spaces_reference_subnets_scored_like_candidates(full_run, world):
    from automoe.costs.flops import flops
    from search_spaces import load_space

    base = pd.read_csv(full_run / "baselines.csv")
    expected = load_space("tiny").dense_baselines()
    assert list(base["baseline"]) == list(expected)
    table = pd.read_csv(full_run / "candidates.csv").set_index("key")
    for _, row in base.iterrows():
        config = expected[row["baseline"]]
        assert row["key"] == config.key() and row["origin"] == "baseline"
        assert not row["on_front"] and row["is_dense"] == config.is_dense
        assert row["flops"] == pytest.approx(flops(config).flops, rel=1e-9)
        if row["key"] in table.index:  # scored by the search already: the same numbers
            assert row["loss"] == table.loc[row["key"], "loss"]
    largest = base[base["baseline"] == "largest"].iloc[0]
    assert largest["nll"] == pytest.approx(_extracted_nll(world, largest["config"]), rel=1e-4)


def test_killed_process_resumes_to_the_same_front(world, full_run, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "automoe.cli", *_args(world, "--out", str(out),
                                                      "--generations", str(GENERATIONS))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    checkpoint, done = out / "checkpoint.json", 0
    deadline = time.monotonic() + 120
    try:
        while done < 2:  # generation 1's checkpoint (two generations done)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            if checkpoint.exists():
                done = json.loads(checkpoint.read_text())["generation"]
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
    assert done < GENERATIONS
    assert json.loads((out / "search.json").read_text())["status"] == "running"
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    assert (out / "pareto.csv").read_bytes() == (full_run / "pareto.csv").read_bytes()
    resumed = pd.read_csv(out / "candidates.csv").drop(columns=DETERMINISTIC_DROP)
    pd.testing.assert_frame_equal(resumed,
                                  pd.read_csv(full_run / "candidates.csv").drop(
                                      columns=DETERMINISTIC_DROP))


def test_resume_extends_and_refuses_other_settings(world, full_run, tmp_path, capsys):
    err = _error(capsys, ["search", "--resume", str(full_run), "--objectives", "loss,params"])
    assert "objectives" in err and "differs from the stored" in err
    err = _error(capsys, _args(world, "--out", str(full_run)))
    assert "already holds a search" in err and "--resume" in err
    err = _error(capsys, ["search", "--resume", str(tmp_path / "nothing")])
    assert "search.json" in err
    err = _error(capsys, _args(world, "--out", str(world[1])))  # the data dir, by mistake
    assert "is not a search run" in err


def test_population_below_two_is_refused_not_silently_raised(world, tmp_path, capsys):
    out = tmp_path / "pop1"
    assert main(_args(world, "--out", str(out), "--population", "1")) == 2
    assert "--population 1" in capsys.readouterr().err and not out.exists()


def test_unknown_objective_fails_before_any_work(world, tmp_path, capsys):
    out = tmp_path / "r"
    err = _error(capsys, _args(world, "--out", str(out), "--objectives", "bleu,speed"))
    assert "unknown metric 'speed'" in err and "latency" in err
    assert not out.exists()


def test_unsatisfiable_constraint_fails_on_the_smallest_subnet(world, tmp_path, capsys):
    out = tmp_path / "r"
    err = _error(capsys, _args(world, "--out", str(out), "--constraint", "flops<=1e3"))
    assert "flops<=1000 cannot be met" in err and "smallest subnet of space 'tiny'" in err
    assert not out.exists()
    err = _error(capsys, _args(world, "--out", str(out), "--constraint", "latency<=1us",
                               "--latency-runs", "1", "--latency-warmup", "0"))
    assert "latency_ms<=0.001 cannot be met" in err and "measures" in err
    assert not out.exists()


def test_checkpoint_that_does_not_fit_its_space(world, tmp_path, capsys):
    from supernet.training.checkpoint import load_checkpoint, save_checkpoint

    supernet, data = world
    state = load_checkpoint(supernet / "checkpoint_last.pt")
    state["space"]["choices"]["encoder_embed_dim"] = [48, 32]  # wider than the weights
    state["space"]["supernet"]["encoder_embed_dim"] = 48
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, {k: v for k, v in state.items() if k != "format"})
    err = _error(capsys, ["search", "--supernet", str(bad), "--data", str(data),
                          "--out", str(tmp_path / "r"), *COMMON])
    assert "bad.pt: the weights do not fit the supernet of space 'tiny'" in err
    assert "size mismatch" in err


def test_unreachable_ray_address_fails_before_loading(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _error(capsys, ["search", "--supernet", str(tmp_path / "never-read"),
                          "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                          "--ray-address", f"127.0.0.1:{port}", "--workers", "2"])
    assert f"--ray-address '127.0.0.1:{port}': cannot reach a Ray cluster" in err


def test_predicted_latency_constraint_is_enforced_by_rejection(world, tmp_path):
    """A bound on a cheap metric rejects proposals before scoring: every scored row meets
    it, and its value is the predictor's for that config."""
    from automoe.costs.features import latency_feature_names, latency_features
    from automoe.costs.predictor import LatencyPredictor, PredictorConfig, fit_predictor
    from search_spaces import load_space

    space, rng = load_space("tiny"), random.Random(0)
    configs = [space.sample(rng) for _ in range(60)]
    x = np.array([latency_features(space, c) for c in configs])
    y = 1.0 + (x / np.maximum(x.max(axis=0), 1.0)) @ np.linspace(0.1, 2.0, x.shape[1])
    predictor, _ = fit_predictor(x, y, latency_feature_names(space),
                                 PredictorConfig(hidden_dim=8, hidden_layers=1, steps=20))
    predictor.save(tmp_path / "pred")
    values = LatencyPredictor.load(tmp_path / "pred").predict(configs, space)
    bound = float(np.median(values))
    out = tmp_path / "r"
    assert main(_args(world, "--out", str(out), "--generations", "2", "--objectives",
                      "loss,predicted_latency", "--constraint", f"predicted_latency<={bound}ms",
                      "--predictor", str(tmp_path / "pred"))) == 0
    table = pd.read_csv(out / "candidates.csv")
    assert len(table) >= 6 and (table["predicted_latency_ms"] <= bound).all()
    expected = predictor.predict([SubnetConfig.from_json(c) for c in table["config"]], space)
    np.testing.assert_allclose(table["predicted_latency_ms"], expected, rtol=1e-6)
    assert "predictor" in json.loads((out / "search.json").read_text())["protocols"][
        "predicted_latency"]


def test_bleu_is_sacrebleu_of_the_extracted_subnets_greedy_translations(world, tmp_path):
    """The bleu/chrf columns against sacrebleu on translations made independently: the
    extracted static model, one sentence at a time (no batching, no padding)."""
    import sacrebleu

    from automoe.checkpoints import load_supernet
    from automoe.data import Tokenizer, load_split
    from automoe.decoding import greedy_decode
    from supernet.tokens import EOS_ID

    supernet, data = world
    out = tmp_path / "b"
    assert main(_args(world, "--out", str(out), "--generations", "1", "--population", "2",
                      "--objectives", "bleu,flops")) == 0
    table = pd.read_csv(out / "candidates.csv")
    model, _ = load_supernet(supernet)
    tokenizer, valid = Tokenizer.load(data), load_split(data, "valid")
    refs = (Path(data) / "valid.ref.txt").read_text(encoding="utf-8").split("\n")[:8]
    for _, row in table.iterrows():
        sub = model.extract(SubnetConfig.from_json(row["config"])).eval()
        hyps = [tokenizer.decode(greedy_decode(
            sub, torch.tensor([list(valid.src[i]) + [EOS_ID]]), max_len_a=1.2,
            max_len_b=10)[0].tokens) for i in range(8)]
        assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-6)
        assert row["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-6)


def test_experts_constraint_searches_dense_subnets_only(world, tmp_path):
    """``--constraint experts<=1`` rejects every MoE proposal before scoring: all scored
    candidates are dense, and the column agrees with the configs."""
    out = tmp_path / "dense"
    assert main(_args(world, "--out", str(out), "--generations", "2",
                      "--constraint", "experts<=1")) == 0
    table = pd.read_csv(out / "candidates.csv")
    configs = [SubnetConfig.from_json(c) for c in table["config"]]
    assert len(table) >= 6 and all(c.is_dense for c in configs)
    assert (table["max_experts"] == 1).all()


def test_resume_works_from_anywhere_and_refuses_a_changed_supernet(world, tmp_path,
                                                                   monkeypatch, capsys):
    """Run dirs store resolved paths (resume from another directory), and a resume whose
    supernet was trained further (another sha256) is refused, naming it, with nothing
    written."""
    import shutil

    from search_helpers import make_supernet

    supernet, data = world
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(supernet, home / "sup")
    monkeypatch.chdir(home)
    assert main(["search", "--supernet", "sup", "--data", str(data), "--out", "run",
                 *COMMON, "--generations", "1", "--no-baselines"]) == 0
    stored = json.loads((home / "run" / "search.json").read_text())["settings"]
    assert stored["supernet"] == str(home / "sup") and os.path.isabs(stored["data"])
    monkeypatch.chdir(tmp_path)  # elsewhere: the stored paths still point at the inputs
    assert main(["search", "--resume", str(home / "run"), "--generations", "2", "--quiet"]) == 0
    before = (home / "run" / "checkpoint.json").read_text()
    make_supernet(home / "other", data, seed=7)
    shutil.copyfile(home / "other" / "supernet" / "checkpoint_last.pt",
                    home / "sup" / "checkpoint_last.pt")
    assert main(["search", "--resume", str(home / "run"), "--generations", "3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "supernet checkpoint" in err and "sha256" in err and len(err.splitlines()) == 1
    assert (home / "run" / "checkpoint.json").read_text() == before
    # the supernet back, but a data dir rebuilt since (another input hash recorded)
    shutil.copyfile(supernet / "checkpoint_last.pt", home / "sup" / "checkpoint_last.pt")
    meta = json.loads((home / "run" / "search.json").read_text())
    meta["data_identity"]["input_hash"] = "0" * 64
    (home / "run" / "search.json").write_text(json.dumps(meta))
    assert main(["search", "--resume", str(home / "run"), "--generations", "3",
                 "--quiet"]) == 2
    assert "data dir" in capsys.readouterr().err


def test_a_quiet_search_draws_no_progress_bar(world, tmp_path, capsys):
    assert main(_args(world, "--out", str(tmp_path / "q"), "--generations", "1")) == 0
    assert (tmp_path / "q" / "comparisons.csv").is_file()  # the comparisons did run
    err = capsys.readouterr().err
    assert "comparisons" not in err and "it/s" not in err and "%|" not in err
