"""Every command's failures end as one line on stderr with exit status 2: an invalid
device, a path that cannot be written, a multi-line library message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automoe.cli import main


@pytest.mark.parametrize("argv", [
    ["supernet", "train", "--space", "tiny", "--data", "nowhere", "--out", "x",
     "--device", "bogus"],
    ["train", "--subnet", "s.json", "--data", "nowhere", "--out", "x", "--device", "tpu:3"],
    ["translate", "nowhere", "--device", "gpu"],
])
def test_an_invalid_device_is_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """/sys refuses new folders even to root: the OSError becomes one line naming it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "candidates.csv").write_text("key,flops,bleu,origin\nabcd,1e8,1.0,sample\n")
    (run / "search.json").write_text(json.dumps({"settings": {"objectives": ["bleu",
                                                                            "flops"]}}))
    target = Path("/sys/automoe-cannot-write/plots")
    assert main(["plot", str(run), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "/sys/automoe-cannot-write" in err and len(err.strip().splitlines()) == 1


def test_a_multi_line_yaml_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text("name: x\nchoices: [unclosed\n  - a\n")
    assert main(["space", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1


def _space_yaml(layers: str) -> str:
    keys = {"encoder_embed_dim": "[64]", "decoder_embed_dim": "[64]", "qkv_dim": "[64]",
            "encoder_layers": layers, "decoder_layers": "[1]", "encoder_ffn_dim": "[64]",
            "decoder_ffn_dim": "[64]", "encoder_heads": "[4]", "decoder_heads": "[4]",
            "decoder_cross_heads": "[4]", "decoder_ende_attn": "[1]", "encoder_experts": "[1]",
            "decoder_experts": "[1]", "encoder_top_k": "[1]", "decoder_top_k": "[1]"}
    return ("name: x\nheterogeneous_experts: true\nchoices:\n"
            + "".join(f"  {k}: {v}\n" for k, v in keys.items()))


@pytest.mark.parametrize("setup, argv, needle", [
    (lambda d: (d / "bin.yaml").write_bytes(b"\x00\x01\xff\xfe"),
     ["space", "show", "bin.yaml"], "bin.yaml: not UTF-8 text"),
    (lambda d: (d / "big.yaml").write_text(_space_yaml("[1, 100000]")),
     ["space", "show", "big.yaml"], "choices.encoder_layers': choice 100000 is above"),
    (lambda d: ((d / "run").mkdir(), (d / "run" / "candidates.csv").write_text("key,bleu\nab,1\n"),
                (d / "run" / "search.json").write_bytes(b"\x00\xff")),
     ["plot", "run", "-o", "p"], "search.json: not UTF-8 text"),
    (lambda d: ((d / "run").mkdir(), (d / "run" / "candidates.csv").write_text("key,bleu\nab,1\n"),
                (d / "run" / "search.json").write_text("{bad")),
     ["plot", "run", "-o", "p"], "search.json: not valid JSON"),
    (lambda d: ((d / "run").mkdir(), (d / "run" / "candidates.csv").write_text("")),
     ["plot", "run", "-o", "p"], "candidates.csv: empty"),
    (lambda d: ((d / "sn").mkdir(), (d / "sn" / "run.json").write_text("{bad")),
     ["supernet", "train", "--out", "sn", "--resume"], "run.json: not valid JSON"),
])
def test_malformed_files_are_named_in_one_line(setup, argv, needle, tmp_path, monkeypatch,
                                               capsys):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p").exists()

