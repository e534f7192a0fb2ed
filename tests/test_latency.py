"""Latency measurement on real (tiny) models: the protocol is followed call by call, the
statistics are consistent, datasets resume and never mix devices, the CLI end to end."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from automoe.cli import main
from automoe.costs.dataset import collect_latency_dataset, random_model
from automoe.costs.features import latency_feature_names, latency_features
from automoe.costs.latency import LatencyProtocol, device_fingerprint, measure_latency
from search_spaces import SubnetConfig, load_space
from supernet import SuperTransformer
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID

VOCAB = 50
FAST = LatencyProtocol(threads=1, src_len=6, tgt_len=4, beam=3, warmup=2, runs=5, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


class Recorder:
    """Wraps a model and records every protocol call (the oracle for what was timed)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, src):
        self.calls.append(("encode", tuple(src.shape), src.clone()))
        return self.model.encode(src)

    def new_cache(self):
        self.calls.append(("new_cache",))
        return self.model.new_cache()

    def decode(self, prev, enc, cache=None):
        self.calls.append(("decode", tuple(prev.shape), cache.length, enc.out.shape[0], prev.clone()))
        return self.model.decode(prev, enc, cache=cache)


def test_protocol_is_followed_step_by_step(space):
    model = Recorder(random_model(space.largest(), VOCAB))
    result = measure_latency(model, FAST)
    encodes = [c for c in model.calls if c[0] == "encode"]
    decodes = [c for c in model.calls if c[0] == "decode"]
    assert len(encodes) == FAST.warmup + FAST.runs
    assert all(c[1] == (1, 6) for c in encodes)
    src = encodes[0][2]
    assert src[0, -1] == EOS_ID and bool((src[0, :-1] > EOS_ID).all())
    assert len(decodes) == (FAST.warmup + FAST.runs) * FAST.tgt_len
    # one token per step for beam rows, the cache growing 0, 1, 2, 3 within each sample
    assert all(c[1] == (3, 1) and c[3] == 3 for c in decodes)
    assert [c[2] for c in decodes[: FAST.tgt_len]] == list(range(FAST.tgt_len))
    assert bool((decodes[0][4] == BOS_ID).all()) and bool((decodes[1][4] > EOS_ID).all())
    assert len(result.encoder_ms) == len(result.decoder_ms) == FAST.runs
    assert result.device_ms == ()


def test_a_model_outside_the_contract_is_named(space):
    model = random_model(space.smallest(), VOCAB)
    members = {n: getattr(model, n) for n in (
        "encode", "decode", "new_cache", "parameters", "train", "eval", "training", "__call__",
        "config", "vocab_size")}
    assert len(measure_latency(SimpleNamespace(**members), FAST).decoder_ms) == FAST.runs
    without = {k: v for k, v in members.items() if k != "new_cache"}
    with pytest.raises(ValueError, match=r"lacks \['new_cache'\]"):
        measure_latency(SimpleNamespace(**without), FAST)
    without = {k: v for k, v in members.items() if k not in ("config", "vocab_size")}
    with pytest.raises(ValueError, match=r"lacks \['config', 'vocab_size'\]"):
        measure_latency(SimpleNamespace(**without), FAST)
    with pytest.raises(ValueError, match=f"vocab_size {VOCAB + 1} != protocol vocab_size"):
        measure_latency(random_model(space.smallest(), VOCAB + 1), FAST)


def test_statistics_are_consistent(space):
    threads = torch.get_num_threads()
    model = random_model(space.sample(random.Random(1)), VOCAB).train()
    r = measure_latency(model, FAST, subnet_key="k")
    assert torch.get_num_threads() == threads and model.training  # settings restored
    s = r.stats
    totals = r.total_ms
    assert all(t > 0 for t in totals) and s["n"] == FAST.runs
    assert min(totals) <= s["p10"] <= s["median"] <= s["p90"] <= max(totals)
    assert min(totals) <= s["trimmed_mean"] <= max(totals)
    assert r.latency_ms == s["median"] == sorted(totals)[FAST.runs // 2]
    assert r.fingerprint == device_fingerprint("cpu", "float32", 1)
    d = r.to_dict()
    assert d["latency_ms"] == r.latency_ms and len(d["encoder_ms"]) == FAST.runs
    assert d["protocol"] == FAST.to_dict() and d["subnet_key"] == "k"


def test_real_sentences_are_batched_and_padded(space):
    sents = ((5, 6, 7, EOS_ID), (8, EOS_ID), (9, 10, EOS_ID))
    p = LatencyProtocol(threads=1, batch=2, tgt_len=2, beam=2, warmup=0, runs=2,
                        vocab_size=VOCAB, sentences=sents)
    model = Recorder(random_model(space.smallest(), VOCAB))
    r = measure_latency(model, p)
    srcs = [c[2] for c in model.calls if c[0] == "encode"]
    assert [tuple(s.shape) for s in srcs] == [(2, 4), (1, 3)] * 2
    assert srcs[0][1].tolist() == [8, EOS_ID, PAD_ID, PAD_ID]
    assert len(r.total_ms) == 2 * 2  # runs x input batches
    assert {c[3] for c in model.calls if c[0] == "decode"} == {4, 2}  # beam rows


def test_supernet_view_and_checks(space):
    supernet = SuperTransformer(space, VOCAB, seed=0)
    view = supernet.bind(space.smallest())
    assert len(measure_latency(view, FAST).total_ms) == FAST.runs
    with pytest.raises(ValueError, match="float16"):
        measure_latency(view, LatencyProtocol(dtype="float16", vocab_size=VOCAB))
    with pytest.raises(ValueError, match="vocab_size"):
        measure_latency(view, LatencyProtocol(vocab_size=VOCAB + 1))
    with pytest.raises(ValueError, match="encode"):
        measure_latency(object(), FAST)


def test_dataset_resumes_and_never_mixes(space, tmp_path):
    out = tmp_path / "lat.csv"
    p = LatencyProtocol(threads=1, src_len=4, tgt_len=2, beam=2, warmup=0, runs=2, vocab_size=VOCAB)
    built = []

    def build(config):
        built.append(config.key())
        return random_model(config, VOCAB)

    df = collect_latency_dataset(space, 3, out, p, seed=5, build_model=build, progress=False)
    assert len(df) == 3 == len(built) and df["key"].is_unique
    first = pd.read_csv(out, dtype={"key": str})
    assert list(first["key"]) == built
    names = latency_feature_names(space)
    assert [c for c in first.columns if c.startswith("f_")] == [f"f_{n}" for n in names]
    configs = [SubnetConfig.from_json(c) for c in first["config"]]
    assert first[[f"f_{n}" for n in names]].to_numpy().tolist() == [
        latency_features(space, c) for c in configs]
    assert json.loads(first["fingerprint"][0]) == device_fingerprint("cpu", "float32", 1)
    # a rerun measures nothing; a larger n measures only the new subnets
    collect_latency_dataset(space, 3, out, p, seed=5, build_model=build, progress=False)
    assert len(built) == 3
    df = collect_latency_dataset(space, 5, out, p, seed=5, build_model=build, progress=False)
    assert len(built) == 5 and len(df) == 5 and list(df["key"][:3]) == list(first["key"])
    with pytest.raises(ValueError, match="protocol"):
        collect_latency_dataset(space, 5, out, LatencyProtocol(threads=1, runs=3, vocab_size=VOCAB),
                                seed=5, progress=False)
    moved = pd.read_csv(out, dtype={"key": str})
    moved["fingerprint_id"] = "0" * 16
    moved.to_csv(out, index=False)
    with pytest.raises(ValueError, match="never mix devices"):
        collect_latency_dataset(space, 6, out, p, seed=5, progress=False)


def test_cli_measure_collect_fit(space, tmp_path, capsys):
    config = tmp_path / "subnet.json"
    config.write_text(space.sample(random.Random(2)).to_json())
    proto = ["--threads", "1", "--src-len", "5", "--tgt-len", "3", "--warmup", "1",
             "--runs", "3", "--vocab-size", str(VOCAB)]
    cache = str(tmp_path / "cache.jsonl")
    assert main(["latency", "measure", str(config), "--space", "tiny", *proto, "--json",
                 "--cache", cache]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cached"] is False and first["runs"] == 3 and first["latency_ms"] > 0
    assert main(["latency", "measure", str(config), "--space", "tiny", *proto, "--json",
                 "--cache", cache]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["cached"] is True and second["encoder_ms"] == first["encoder_ms"]
    assert main(["latency", "measure", str(config), "--space", "tiny", *proto]) == 0
    assert "median" in capsys.readouterr().out

    data = str(tmp_path / "lat.csv")
    assert main(["latency", "collect", "--space", "tiny", "-n", "12", "--out", data, "--quiet",
                 *proto[:-4], "--runs", "1", "--warmup", "0", "--vocab-size", str(VOCAB)]) == 0
    assert len(pd.read_csv(data)) == 12 and "12 subnets" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert main(["latency", "fit", data, "--out", str(pred), "--steps", "50", "--hidden-dim", "16",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_train"] + report["n_val"] + report["n_test"] == 12
    from automoe.costs.predictor import LatencyPredictor

    loaded = LatencyPredictor.load(pred)
    assert loaded.meta["space"] == "tiny" and loaded.meta["fingerprint"]["threads"] == 1
    preds = loaded.predict([space.largest(), space.smallest()])
    assert preds.shape == (2,)
    assert main(["latency", "fit", str(tmp_path / "none.csv"), "--out", str(pred)]) == 2


def test_cli_measure_from_a_trained_supernet(space, tmp_path, capsys):
    from supernet.training.checkpoint import save_checkpoint

    supernet = SuperTransformer(space, 37, seed=3)
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint_last.pt", {
        "kind": "supernet", "space": space.to_dict(), "vocab_size": 37,
        "model_options": supernet.options.to_dict(), "model": supernet.state_dict()})
    config = tmp_path / "subnet.json"
    config.write_text(space.sample(random.Random(4)).to_json())
    argv = ["latency", "measure", str(config), "--supernet", str(run), "--threads", "1",
            "--src-len", "4", "--tgt-len", "2", "--warmup", "0", "--runs", "2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"]["vocab_size"] == 37  # the supernet's, not the default 8000
    assert out["protocol"]["weights"].startswith("supernet:")
    assert out["protocol_key"] != LatencyProtocol(
        threads=1, src_len=4, tgt_len=2, warmup=0, runs=2, vocab_size=37).key()
    outside = tmp_path / "outside.json"
    outside.write_text(load_space("demo").smallest().to_json())
    assert main(["latency", "measure", str(outside), "--supernet", str(run)]) == 2
    assert "outside.json" in capsys.readouterr().err


class Sleeper(Recorder):
    """Waits 10 ms off-CPU in every decoder step: the wall clock sees it, CPU time not."""

    def decode(self, prev, enc, cache=None):
        import time

        time.sleep(0.01)
        return self.model.decode(prev, enc, cache=cache)


def test_thread_cpu_clock_ignores_time_off_cpu(space):
    model = Sleeper(random_model(space.smallest(), VOCAB))
    base = dict(threads=1, src_len=4, tgt_len=3, beam=2, warmup=0, runs=2, vocab_size=VOCAB)
    wall = measure_latency(model, LatencyProtocol(**base))
    cpu = measure_latency(model, LatencyProtocol(**base, clock="thread_cpu"))
    assert min(wall.decoder_ms) >= 3 * 10.0
    assert max(cpu.decoder_ms) < 3 * 10.0
    assert LatencyProtocol(**base).key() != LatencyProtocol(**base, clock="thread_cpu").key()
    with pytest.raises(ValueError, match="threads=1"):
        LatencyProtocol(clock="thread_cpu", threads=2)
    with pytest.raises(ValueError, match="'clock'"):
        LatencyProtocol(clock="cycles")
