"""`automoe cost` in-process: JSON fields, protocol options, YAML input, errors, and the
parameter count against the built model's tensors (pre-LN and post-LN)."""

from __future__ import annotations

import json
import random

import pytest

from automoe.cli import main
from automoe.costs.flops import FlopsProtocol, flops
from automoe.costs.report import DEFAULT_VOCAB_SIZE
from search_spaces import load_space
from search_spaces.importers import to_hat_yaml


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")


def _run_json(capsys, *argv) -> dict:
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_vocab_is_the_data_pipelines():
    from automoe.data import PrepareOptions

    assert PrepareOptions().vocab_size == DEFAULT_VOCAB_SIZE


def test_cost_json_fields_and_protocol(tmp_path, capsys, tiny):
    config = tiny.sample(random.Random(3))
    path = tmp_path / "subnet.json"
    path.write_text(config.to_json())
    out = _run_json(capsys, str(path), "--space", "tiny")
    for key in ("params_total", "params_active", "params_hat", "macs", "flops", "protocol"):
        assert key in out
    assert out["flops"] == 2 * out["macs"] == flops(config).flops
    assert "30 source + 30" in out["protocol"] and out["vocab_size"] == DEFAULT_VOCAB_SIZE
    # the embedding table is the only thing total has and HAT's count lacks
    width = max(config.encoder_embed_dim, config.decoder_embed_dim)
    assert out["params_total"] - out["params_hat"] == DEFAULT_VOCAB_SIZE * width
    assert out["params_hat"] < out["params_total"] and out["params_active"] <= out["params_total"]
    # --seq-len sets both lengths (IWSLT: 23)
    short = _run_json(capsys, str(path), "--space", "tiny", "--seq-len", "23")
    assert short["macs"] == flops(config, FlopsProtocol(src_len=23, tgt_len=23)).macs
    assert "23 source + 23" in short["protocol"]
    # the output projection option adds T * d_dec * V, with the given vocab
    with_out = _run_json(capsys, str(path), "--space", "tiny", "--include-output-projection",
                         "--vocab-size", "100")
    assert with_out["macs"] - out["macs"] == 30 * config.decoder_embed_dim * 100
    assert with_out["params_total"] - with_out["params_hat"] == 100 * width


def test_cost_accepts_hat_yaml(tmp_path, capsys, tiny):
    config = tiny.largest()
    (tmp_path / "a.json").write_text(config.to_json())
    (tmp_path / "a.yml").write_text(to_hat_yaml(config))
    from_json = _run_json(capsys, str(tmp_path / "a.json"), "--space", "tiny")
    from_yaml = _run_json(capsys, str(tmp_path / "a.yml"), "--space", "tiny")
    assert from_json == from_yaml


def test_cost_accepts_an_exported_model_dir(tmp_path, capsys, tiny):
    from supernet import Transformer

    config = tiny.sample(random.Random(8))
    Transformer(config, 30).save(tmp_path / "model")
    (tmp_path / "c.json").write_text(config.to_json())
    # the model's own vocabulary unless --vocab-size says otherwise
    from_dir = _run_json(capsys, str(tmp_path / "model"), "--space", "tiny")
    assert from_dir["vocab_size"] == 30
    assert from_dir == _run_json(capsys, str(tmp_path / "c.json"), "--space", "tiny",
                                 "--vocab-size", "30")
    assert _run_json(capsys, str(tmp_path / "model"), "--space", "tiny", "--vocab-size",
                     "100") == _run_json(capsys, str(tmp_path / "c.json"), "--space", "tiny",
                                         "--vocab-size", "100")


@pytest.mark.parametrize("pre_ln", [False, True], ids=["post-LN", "pre-LN"])
def test_cost_params_equal_the_built_models_tensors(tmp_path, capsys, tiny, pre_ln):
    """Oracle: the parameters of the built standalone model (tied output projection counted
    once). An exported model dir carries its layer-norm placement; a bare subnet file takes
    it from --pre-ln / --post-ln."""
    from supernet import ModelOptions, Transformer

    vocab = 37
    for seed in (1, 2):
        config = tiny.sample(random.Random(seed))
        model = Transformer(config, vocab,
                                        options=ModelOptions(normalize_before=pre_ln))
        built = sum(p.numel() for p in model.parameters())
        model.save(tmp_path / f"model{seed}")
        from_dir = _run_json(capsys, str(tmp_path / f"model{seed}"), "--space", "tiny")
        assert from_dir["params_total"] == built and from_dir["normalize_before"] is pre_ln
        path = tmp_path / f"subnet{seed}.json"
        path.write_text(config.to_json())
        flag = "--pre-ln" if pre_ln else "--post-ln"
        from_file = _run_json(capsys, str(path), "--space", "tiny", "--vocab-size", str(vocab),
                              flag)
        assert from_file["params_total"] == built
        # a bare subnet file without a flag counts a post-LN model (the models' default)
        plain = _run_json(capsys, str(path), "--space", "tiny", "--vocab-size", str(vocab))
        assert plain["params_total"] == sum(p.numel() for p in Transformer(
            config, vocab).parameters())


def test_cost_text_output_states_the_protocol(tmp_path, capsys, tiny):
    path = tmp_path / "s.json"
    path.write_text(tiny.smallest().to_json())
    assert main(["cost", str(path), "--space", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "FLOPs" in text and "2 x" in text and "excl. embeddings and output projection" in text


def test_cost_bad_input_is_one_line_and_exit_2(tmp_path, capsys, tiny):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"encoder_embed_dim": 32}))
    assert main(["cost", str(bad), "--space", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "missing key" in err
    outside = tmp_path / "outside.json"
    outside.write_text(load_space("demo").largest().to_json())  # not a tiny subnet
    assert main(["cost", str(outside), "--space", "tiny"]) == 2
    assert "outside.json" in capsys.readouterr().err
    assert main(["cost", str(tmp_path / "missing.json"), "--space", "tiny"]) == 2
    assert "missing.json" in capsys.readouterr().err
    model = tmp_path / "model"
    model.mkdir()
    model_config = {"architecture": tiny.smallest().to_dict(), "vocab_size": 30,
                    "options": {"pre_ln": True}}
    (model / "config.json").write_text(json.dumps(model_config))
    assert main(["cost", str(model), "--space", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "pre_ln" in err and len(err.strip().splitlines()) == 1
