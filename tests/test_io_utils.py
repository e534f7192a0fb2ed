"""Atomic output (automoe.io_utils): a writer killed mid-way leaves a recognisable temporary
folder that the next writer of the same target removes, and never touches a live one's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from automoe.io_utils import atomic_dir, sweep_stale_dirs


def test_the_next_writer_sweeps_a_killed_writers_folder_but_not_a_live_ones(tmp_path):
    target = tmp_path / "data"
    # a writer that was SIGKILLed while writing: its folder and its (now dead) pid
    code = ("import os, signal, sys\n"
            "sys.path.insert(0, os.getcwd())\n"
            "from automoe.io_utils import atomic_dir\n"
            f"with atomic_dir({str(target)!r}) as tmp:\n"
            "    (tmp / 'half.bin').write_bytes(b'x' * 1000)\n"
            "    print(tmp, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9
    stale = tmp_path / os.path.basename(done.stdout.strip())
    assert stale.is_dir() and stale.name.startswith(".data.tmp-")
    live = tmp_path / f".data.tmp-{os.getpid()}-abc"  # this process is alive
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "ok.txt").write_text("done")
    assert (target / "ok.txt").read_text() == "done"
    assert not stale.exists() and live.is_dir()
    assert sweep_stale_dirs(target) == []


def test_the_json_reader_names_the_file_for_every_kind_of_bad_input(tmp_path):
    import pytest

    from automoe.io_utils import read_json

    cases = {"deep.json": b"[" * 100_000, "binary.json": b"\xff\xfe\x00",
             "broken.json": b'{"a": 1,', "big.json": b" " * 2048 + b"{}"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=r"deep\.json: JSON nested too deeply"):
        read_json(tmp_path / "deep.json")
    with pytest.raises(ValueError, match=r"binary\.json: not UTF-8"):
        read_json(tmp_path / "binary.json")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON .*line 1"):
        read_json(tmp_path / "broken.json")
    with pytest.raises(ValueError, match=r"big\.json: 2,050 bytes, more than the 1,024"):
        read_json(tmp_path / "big.json", max_bytes=1024)
    with pytest.raises(FileNotFoundError, match=r"missing\.json: no such file"):
        read_json(tmp_path / "missing.json")
    assert read_json(tmp_path / "big.json") == {}


def test_a_deeply_nested_config_is_one_line_and_exit_2(tmp_path, capsys):
    from automoe.cli import main

    (tmp_path / "config.json").write_text("[" * 100_000)
    assert main(["cost", str(tmp_path / "config.json"), "--space", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "config.json: JSON nested too deeply" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_written_files_and_folders_get_the_modes_open_and_mkdir_would_give(tmp_path):
    """mkstemp/mkdtemp create 0600 files and 0700 folders; a published file or model dir
    must be as shareable as the umask allows."""
    from automoe.io_utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir()
            atomic_write_text(tmp / "sub" / "w.json", "{}")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "a.txt") == 0o644 and mode(tmp_path / "b.txt") == 0o640
    assert mode(tmp_path / "model") == 0o755 and mode(tmp_path / "model" / "sub") == 0o755
    assert mode(tmp_path / "model" / "sub" / "w.json") == 0o644


def test_a_full_disk_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """ENOSPC while writing: one OSError naming the file (the CLI prints it as one line with
    exit 2), and no half-written file, model dir or empty latency cache."""
    import errno

    import pytest
    import safetensors.torch

    from automoe.costs import latency_cache
    from automoe.io_utils import atomic_write_text
    from search_spaces import load_space
    from supernet import Transformer
    from supernet import model_dir as model_dir_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"writing .*a\.txt: No space left on device"):
        atomic_write_text(tmp_path / "a.txt", "x")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

    def full_safetensors(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left)")

    monkeypatch.setattr(model_dir_module, "save_file", full_safetensors)
    model = Transformer(load_space("tiny").smallest(), 16)
    with pytest.raises(OSError, match=r"writing .*model\.safetensors: Error while serializing"):
        model.save(tmp_path / "model")
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(latency_cache.os, "write", full)
    from test_latency_cache import _result

    from automoe.costs.latency import LatencyProtocol, device_fingerprint

    cache = latency_cache.LatencyCache(tmp_path / "lat.jsonl")
    with pytest.raises(OSError, match=r"lat\.jsonl: No space left on device"):
        cache.put(_result(device_fingerprint(), protocol=LatencyProtocol(runs=3)))
    assert os.listdir(tmp_path) == []


def test_torch_threads_restores_the_count_however_the_block_ends():
    import pytest
    import torch

    from automoe.devices import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_json_is_written_strict_unless_state_must_round_trip(tmp_path):
    """An undefined statistic (NaN, inf) is written as null, which strict readers accept
    (Python's json writes bare NaN otherwise); internal state can keep it exactly."""
    import json
    import math

    from automoe.io_utils import atomic_write_json

    atomic_write_json(tmp_path / "report.json", {"tau": math.nan, "rows": [1.5, math.inf]})
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "tau": None, "rows": [1.5, None]}
    atomic_write_json(tmp_path / "state.json", {"best": math.inf}, strict=False)
    assert json.loads((tmp_path / "state.json").read_text())["best"] == math.inf
