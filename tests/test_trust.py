"""What a run directory someone hands you can make the tool do (docs/protocols.md, "Trust").
A resumed search or retrain job never connects where the run directory says, and never
writes where it says outside the run: a listening socket shows that no connection is made."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from search_helpers import make_world


@pytest.fixture()
def listener():
    """A TCP socket listening on localhost: ``(address, connected)``; ``connected()`` says
    whether anything has connected to it since."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.3)

    def connected() -> bool:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    yield f"127.0.0.1:{server.getsockname()[1]}", connected
    server.close()


class _Stop(Exception):
    pass


@pytest.fixture()
def fake_ray(monkeypatch):
    """`ray.init` that records its arguments and stops the command (no cluster starts)."""
    import ray

    calls: list[dict] = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    return calls


def test_resumed_search_ignores_the_run_dirs_ray_address_and_latency_cache(
        tmp_path, listener, fake_ray):
    from automoe.search import SearchSettings, run_search
    from automoe.search.settings import resume_settings

    supernet, data = make_world(tmp_path / "world")
    run = tmp_path / "run"
    run_search(SearchSettings(supernet=str(supernet), data=str(data), out=str(run),
                              objectives=("loss", "flops"), generations=1, population=2,
                              workers=0, dev_sentences=4, baselines=False, progress=False))
    address, connected = listener
    meta = json.loads((run / "search.json").read_text())
    outside = tmp_path / "elsewhere" / "cache.jsonl"
    meta["settings"].update(ray_address=address, workers=2, latency_cache=str(outside))
    (run / "search.json").write_text(json.dumps(meta))

    settings = resume_settings(run)
    assert settings.ray_address is None and settings.latency_cache is None
    with pytest.raises(_Stop):
        run_search(settings)
    assert fake_ray == [{"address": "local", "num_cpus": 2, "include_dashboard": False,
                         "log_to_driver": False}]
    assert not connected()
    # the resuming user's own address is the one used
    assert resume_settings(run, ray_address="10.0.0.1:6379").ray_address == "10.0.0.1:6379"


def test_resumed_retrain_ignores_the_run_dirs_ray_address(tmp_path, listener, fake_ray):
    from automoe.training.retrain.job import RETRAIN_DIR, SETTINGS_FILE, _init_ray, resume_settings

    address, connected = listener
    path = Path(tmp_path) / RETRAIN_DIR / SETTINGS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"settings": {"run_dir": str(tmp_path), "keys": ["0" * 16],
                                             "ray_address": address, "concurrent": 1}}))
    settings = resume_settings(tmp_path, {"progress": False})
    assert settings.ray_address is None
    with pytest.raises(_Stop):
        _init_ray(settings)
    assert fake_ray[0]["address"] == "local"
    assert not connected()
    assert resume_settings(tmp_path, {"ray_address": "auto"}).ray_address == "auto"


def _fake_run(root: Path, meta) -> Path:
    """A run dir with one candidate and the given search.json content."""
    import pandas as pd

    from search_spaces import load_space

    config = load_space("tiny").largest()
    root.mkdir(parents=True)
    table = pd.DataFrame({"key": [config.key()], "loss": [5.0], "flops": [1e6],
                          "config": [config.to_json()]})
    table.to_csv(root / "candidates.csv", index=False)
    table.to_csv(root / "pareto.csv", index=False)
    (root / "search.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return root


GOOD = {"settings": {"data": "d", "supernet": "s", "objectives": ["loss", "flops"]}}


@pytest.mark.parametrize("meta, needle", [
    ({**GOOD, "supernet": "x"}, "'supernet' must be an object"),
    ({"settings": {"supernet": "s"}}, "missing settings.'data'"),
    ({}, "missing 'settings'"),
    ({"settings": ["d"]}, "'settings' must be an object"),
    ({**GOOD, "supernet": {"checkpoint": 3}}, "'supernet.checkpoint' must be a path string"),
    ({"settings": {**GOOD["settings"], "objectives": "loss"}}, "settings.'objectives' must be a list"),
    ("[" * 100_000, "JSON nested too deeply"),
])
def test_a_bad_search_json_is_one_line_and_exit_2(tmp_path, capsys, meta, needle):
    from automoe.cli import main

    run = _fake_run(tmp_path / "run", meta)
    assert main(["export", str(run), "--pick", "knee", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(run / "search.json") in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("doc, needle", [
    ({}, "expected an object with a 'settings' object"),
    ({"settings": ["x"]}, "expected an object with a 'settings' object"),
    ({"settings": {"keys": ["0" * 16], "colour": "red"}}, "unknown setting(s) ['colour']"),
    ({"settings": {"keys": ["0" * 16], "top": "x"}}, "top"),
])
def test_a_bad_retrain_json_is_one_line_and_exit_2(tmp_path, capsys, doc, needle):
    from automoe.cli import main
    from automoe.training.retrain.job import RETRAIN_DIR, SETTINGS_FILE

    path = tmp_path / RETRAIN_DIR / SETTINGS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    assert main(["retrain", str(tmp_path), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
