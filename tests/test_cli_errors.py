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
