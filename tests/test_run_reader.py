"""The one search-run reader (automoe.run_dir.read_run) and the places built on it:
keys that look like numbers stay the exact strings written, in every table; missing or bad
files fail naming the file."""

from __future__ import annotations

import json

import pytest

from automoe.plots import load_run
from automoe.run_dir import read_run

# Hex keys pandas would otherwise read as numbers: an integer with a leading zero, a float.
KEYS = ["0123456789012345", "00000000000000e1", "abcdef0123456789"]


def _run(tmp_path, *, front=True, meta=True):
    run = tmp_path / "run"
    run.mkdir()
    rows = "".join(f"{k},{25 + i},{1e9 * (3 - i)}\n" for i, k in enumerate(KEYS))
    (run / "candidates.csv").write_text("key,bleu,flops\n" + rows)
    if front:
        (run / "pareto.csv").write_text("key,bleu,flops\n" + rows.splitlines(True)[1])
    if meta:
        (run / "search.json").write_text(json.dumps({"label": "L", "settings": {
            "objectives": ["bleu", "flops"], "data": "data"}}))
    return run


def test_keys_stay_the_strings_written_in_every_table(tmp_path):
    run = _run(tmp_path)
    (run / "baselines.csv").write_text("key,bleu,flops\n0000000000000042,20,1e9\n")
    (run / "retrained.csv").write_text(f"key,bleu_retrained\n{KEYS[1]},31.5\n")
    table = read_run(run, need_front=True)
    assert list(table.candidates["key"]) == KEYS
    assert list(table.front["key"]) == [KEYS[1]]
    assert table.meta["label"] == "L" and [o.name for o in table.objectives] == ["bleu", "flops"]
    loaded = load_run(run)
    assert loaded.label == "L"
    assert list(loaded.candidates["key"]) == [*KEYS, "0000000000000042"]
    retrained = loaded.candidates.set_index("key")["bleu_retrained"]
    assert retrained[KEYS[1]] == 31.5 and retrained.isna().sum() == 3


def test_optional_files(tmp_path):
    run = _run(tmp_path, front=False, meta=False)
    table = read_run(run, need_meta=False)
    assert table.front is None and table.meta == {}
    assert load_run(run).label == "run"
    (run / "pareto.csv").write_text("")
    assert read_run(run, need_front=True, need_meta=False).front.empty


@pytest.mark.parametrize(("setup", "kwargs", "error", "message"), [
    (lambda run: run.rename(run.with_name("gone")), {}, FileNotFoundError,
     "no such run directory"),
    (lambda run: (run / "candidates.csv").unlink(), {}, FileNotFoundError,
     "no candidates.csv"),
    (lambda run: (run / "candidates.csv").write_text("key,bleu\n"), {}, ValueError,
     "candidates.csv: no candidates"),
    (lambda run: (run / "pareto.csv").unlink(), {"need_front": True}, FileNotFoundError,
     "no pareto.csv"),
    (lambda run: (run / "search.json").unlink(), {}, FileNotFoundError, "no search.json"),
    (lambda run: (run / "search.json").write_text("[1]"), {}, ValueError,
     "search.json: expected a JSON object"),
])
def test_bad_runs_fail_naming_the_file(tmp_path, setup, kwargs, error, message):
    run = _run(tmp_path)
    setup(run)
    with pytest.raises(error, match=message):
        read_run(run, **kwargs)
