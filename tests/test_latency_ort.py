"""Latency in ONNX Runtime: the protocol names its runtime (key, fingerprint, text), the
exported graphs run every step of the protocol, and torch and ONNX Runtime measurements of
one subnet never share a cache record."""

from __future__ import annotations

import json
import random

import pytest

from automoe.cli import main
from automoe.costs.dataset import random_model
from automoe.costs.latency import (
    LatencyProtocol,
    LatencyResult,
    device_fingerprint,
    measure_latency,
)
from automoe.costs.latency_cache import LatencyCache
from search_spaces import load_space

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

VOCAB = 50
ORT = LatencyProtocol(threads=1, src_len=6, tgt_len=4, beam=3, warmup=1, runs=3, vocab_size=VOCAB,
                      runtime="onnxruntime")


def dense_subnet(seed: int):
    """The first dense sample of the tiny space from `seed`: what is tested here is the
    protocol around the graphs (MoE graphs: test_onnx_export), and a dense model exports
    several times faster."""
    space, rng = load_space("tiny"), random.Random(seed)
    return next(c for c in iter(lambda: space.sample(rng), None) if c.is_dense)


def test_protocol_names_its_runtime():
    torch_p = LatencyProtocol(threads=1, vocab_size=VOCAB)
    ort_p = LatencyProtocol(threads=1, vocab_size=VOCAB, runtime="onnxruntime")
    # torch protocols keep the record they had before runtimes existed (stored keys stay found)
    assert "runtime" not in torch_p.to_dict()
    assert ort_p.to_dict() == {**torch_p.to_dict(), "runtime": "onnxruntime"}
    assert ort_p.key() != torch_p.key()
    assert ort_p.describe().startswith("onnxruntime") and "onnxruntime" not in torch_p.describe()
    with pytest.raises(ValueError, match="'runtime' 'tvm'"):
        LatencyProtocol(runtime="tvm")
    with pytest.raises(ValueError, match="cpu"):
        LatencyProtocol(runtime="onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="float32"):
        LatencyProtocol(runtime="onnxruntime", dtype="bfloat16")
    import onnxruntime

    fp = device_fingerprint("cpu", "float32", 1, "onnxruntime")
    assert fp == {**device_fingerprint("cpu", "float32", 1), "runtime": "onnxruntime",
                  "onnxruntime": onnxruntime.__version__, "onnx_moe_dispatch": "gather"}


def test_onnxruntime_runs_every_step_and_the_result_round_trips(monkeypatch, tmp_path):
    from automoe.onnx_runtime import OrtTransformer

    steps: list[tuple[int, ...]] = []
    encodes: list[tuple[int, ...]] = []
    decode, encode = OrtTransformer.decode, OrtTransformer.encode

    def counting_decode(self, prev, enc, cache=None):
        steps.append(tuple(prev.shape))
        return decode(self, prev, enc, cache)

    def counting_encode(self, src):
        encodes.append(tuple(src.shape))
        return encode(self, src)

    monkeypatch.setattr(OrtTransformer, "decode", counting_decode)
    monkeypatch.setattr(OrtTransformer, "encode", counting_encode)
    config = dense_subnet(2)
    result = measure_latency(random_model(config, VOCAB), ORT, subnet_key=config.key())
    samples = ORT.warmup + ORT.runs
    assert encodes == [(1, ORT.src_len)] * samples
    assert steps == [(ORT.beam, 1)] * (samples * ORT.tgt_len)
    assert len(result.total_ms) == ORT.runs and all(t > 0 for t in result.total_ms)
    assert result.protocol["runtime"] == "onnxruntime"
    assert result.fingerprint["runtime"] == "onnxruntime" and result.fingerprint["threads"] == 1
    back = LatencyResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result and back.protocol_key == ORT.key()

    # one cache file, two runtimes: the ORT record is not the torch one
    cache = LatencyCache(tmp_path / "cache.jsonl")
    cache.put(result)
    torch_p = LatencyProtocol(**{**ORT.to_dict(), "runtime": "torch"})
    assert LatencyCache(cache.path).get(config.key(), ORT) == result
    assert LatencyCache(cache.path).get(config.key(), torch_p) is None


def test_latency_measure_cli_with_onnxruntime(tmp_path, capsys):
    config = tmp_path / "subnet.json"
    config.write_text(dense_subnet(3).to_json())
    cache = str(tmp_path / "cache.jsonl")
    argv = ["latency", "measure", str(config), "--space", "tiny", "--threads", "1",
            "--src-len", "5", "--tgt-len", "3", "--warmup", "0", "--runs", "2",
            "--vocab-size", str(VOCAB), "--json", "--cache", cache]
    assert main([*argv, "--runtime", "onnxruntime"]) == 0
    ort = json.loads(capsys.readouterr().out)
    assert ort["cached"] is False and ort["runs"] == 2 and ort["latency_ms"] > 0
    assert ort["protocol"]["runtime"] == "onnxruntime"
    assert ort["protocol_text"].startswith("onnxruntime")
    assert main([*argv, "--runtime", "onnxruntime"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True
    assert main(argv) == 0  # torch: measured, not the ORT record
    mine = json.loads(capsys.readouterr().out)
    assert mine["cached"] is False and "runtime" not in mine["protocol"]
    assert mine["fingerprint_id"] != ort["fingerprint_id"]
    assert len(LatencyCache(cache)) == 2


def test_sessions_run_on_the_intra_op_threads_asked_for(monkeypatch, tmp_path):
    """`threads` is the operator-level parallelism a latency is measured at: intra-op
    threads (inter-op ones only run independent graph branches side by side)."""
    import onnxruntime as ort

    from automoe import onnx_runtime

    seen = []

    def session(path, options, providers):
        seen.append((options.intra_op_num_threads, options.inter_op_num_threads))
        return None

    monkeypatch.setattr(onnx_runtime, "check_onnx_dir", lambda path, config, config_file: {
        "vocab_size": 10, "decoder_step": {"inputs": []}})
    monkeypatch.setattr(ort, "InferenceSession", session)
    onnx_runtime.OrtTransformer(tmp_path, threads=3, providers=["CPUExecutionProvider"])
    assert seen == [(3, 0), (3, 0)]
