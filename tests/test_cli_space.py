"""`automoe space show|list` and `automoe subnet import|sample`, in-process.

Oracles: the library (`load_space(...).size()`, `largest()`), independent re-sampling with
the same seed, hand-written expected configs and the exit-2 contract for bad input.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from automoe.cli import main
from search_spaces import SubnetConfig, available_spaces, load_space

REPO = Path(__file__).resolve().parents[1]

HAT_FILE = """\
encoder-embed-dim-subtransformer: 512
decoder-embed-dim-subtransformer: 640
encoder-ffn-embed-dim-all-subtransformer: [1024, 1024, 2048, 1024, 3072, 1024]
decoder-ffn-embed-dim-all-subtransformer: [3072, 1024, 1024, 1024, 1024, 1024]
encoder-layer-num-subtransformer: 6
decoder-layer-num-subtransformer: 1
encoder-self-attention-heads-all-subtransformer: [8, 8, 8, 4, 8, 8]
decoder-self-attention-heads-all-subtransformer: [4, 8, 8, 8, 8, 8]
decoder-ende-attention-heads-all-subtransformer: [8, 8, 8, 8, 8, 8]
decoder-arbitrary-ende-attn-all-subtransformer: [1, -1, -1, -1, -1, -1]
encoder-n-experts: [2, 1, 1, 1, 1, 1]
encoder-each-expert-ffn-dim-listoflist: ['1024_3072', '1024', '2048', '1024', '3072', '1024']
"""


def test_space_show_json(capsys):
    assert main(["space", "show", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    space = load_space("tiny")
    assert info["name"] == "tiny" and info["size"] == space.size() == 472_464_512
    assert SubnetConfig.from_dict(info["largest"]) == space.largest()
    assert SubnetConfig.from_dict(info["smallest"]) == space.smallest()
    assert info["choices"]["encoder_experts"] == [1, 2, 3]
    assert info["supernet"]["encoder_ffn_dim"] == 64


def test_space_show_text_by_path(capsys):
    path = REPO / "search_spaces" / "automoe_wmt14.yaml"
    assert main(["space", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "space automoe_wmt14" in out and str(load_space("automoe_wmt14").size()) in out
    assert "encoder_experts" in out and "[1, 2, 3, 4, 5, 6]" in out and "largest:" in out


def test_space_list(capsys):
    assert main(["space", "list"]) == 0
    out = capsys.readouterr().out
    for name in available_spaces():
        assert name in out


def test_subnet_sample_is_seeded_and_valid(capsys):
    assert main(["subnet", "sample", "--space", "demo", "--seed", "5", "-n", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    space, rng = load_space("demo"), random.Random(5)
    assert [SubnetConfig.from_json(line) for line in lines] == [space.sample(rng) for _ in range(4)]


def test_subnet_import_to_file_and_stdout(tmp_path, capsys):
    src = tmp_path / "found.yml"
    src.write_text(HAT_FILE)
    out = tmp_path / "sub" / "found.json"
    assert main(["subnet", "import", str(src), "--space", "automoe_wmt14", "-o", str(out)]) == 0
    config = SubnetConfig.from_json(out.read_text())
    assert config.encoder_expert_dims[0] == (1024, 3072) and config.decoder_layers == 1
    assert config.decoder_ende_attn == (2,) and config.decoder_heads == (4,)
    assert config.key() in capsys.readouterr().out
    assert main(["subnet", "import", str(src), "--space", "automoe_wmt14"]) == 0
    assert SubnetConfig.from_json(capsys.readouterr().out) == config


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["space", "show", "nope"], "unknown search space 'nope'"),
        (["space", "show", "missing/space.yaml"], "missing/space.yaml"),
        (["subnet", "sample", "--space", "tiny", "-n", "-1"], "-n must be >= 0"),
        (["subnet", "import", "missing.yml", "--space", "tiny"], "missing.yml"),
    ],
)
def test_errors_exit_2_with_one_stderr_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_import_into_wrong_space_exits_2(tmp_path, capsys):
    src = tmp_path / "found.yml"
    src.write_text(HAT_FILE)
    assert main(["subnet", "import", str(src), "--space", "hat_wmt14"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "'encoder_experts'[0] = 2" in err


@pytest.mark.parametrize(
    "argv",
    [["space", "--help"], ["space", "show", "--help"], ["space", "list", "--help"],
     ["subnet", "--help"], ["subnet", "import", "--help"], ["subnet", "sample", "--help"]],
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: automoe {' '.join(argv[:-1])}") and len(out) > 200
