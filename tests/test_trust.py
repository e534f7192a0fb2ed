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
