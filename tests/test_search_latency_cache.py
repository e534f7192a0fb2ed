"""Two `automoe search` processes at once on one supernet share its latency cache: both
finish, the cache file parses with one record per key, both searches report the recorded
latency of every subnet, and a later search measures nothing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from search_helpers import make_world

from automoe.cli import main
from automoe.costs.latency_cache import LatencyCache

pytestmark = pytest.mark.slow  # still in `make test`


def _args(supernet, data, out, *extra):
    return ["search", "--supernet", str(supernet), "--data", str(data), "--out", str(out),
            "--objectives", "loss,latency", "--population", "4", "--generations", "2",
            "--dev-sentences", "4", "--workers", "0", "--seed", "7", "--latency-runs", "2",
            "--latency-warmup", "0", "--no-baselines", "--quiet", *extra]


def test_two_searches_at_once_share_one_consistent_latency_cache(tmp_path):
    supernet, data = make_world(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "automoe.cli",
                               *_args(supernet, data, tmp_path / name)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
             for name in ("a", "b")]
    try:
        errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0], errors

    cache_file = supernet / "latency_cache.jsonl"  # the default place: beside the checkpoint
    for name in ("a", "b"):
        meta = json.loads((tmp_path / name / "search.json").read_text())
        assert meta["latency_cache"] == str(cache_file.resolve())
    lines = cache_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a whole record
    keys = [(r["fingerprint_id"], r["subnet_key"], r["protocol_key"]) for r in records]
    assert len(set(keys)) == len(keys), "a key was recorded twice"
    assert len(LatencyCache(cache_file)) == len(records)
    recorded = {r["subnet_key"]: r["latency_ms"] for r in records}

    tables = {n: pd.read_csv(tmp_path / n / "candidates.csv", dtype={"key": str})
              for n in ("a", "b")}
    assert set(tables["a"]["key"]) | set(tables["b"]["key"]) == set(recorded)
    for table in tables.values():  # the stored measurement, whoever took it
        expected = table["key"].map(recorded)
        assert table["latency_ms"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-9)
    # Same seed, same deterministic losses and the same recorded latencies: the same front.
    assert (tmp_path / "a" / "pareto.csv").read_bytes() == \
        (tmp_path / "b" / "pareto.csv").read_bytes()
    measured = sum(int((~t["latency_cached"]).sum()) for t in tables.values())
    assert measured >= len(records)  # a key measured by both at once is stored once

    before = cache_file.read_bytes()
    assert main(_args(supernet, data, tmp_path / "c", "--generations", "1")) == 0
    again = pd.read_csv(tmp_path / "c" / "candidates.csv", dtype={"key": str})
    assert again["latency_cached"].all()  # nothing measured again
    assert again["latency_ms"].to_numpy() == pytest.approx(
        again["key"].map(recorded).to_numpy(), rel=1e-9)
    assert cache_file.read_bytes() == before


def test_no_cache_measures_every_time_and_writes_no_file(tmp_path):
    supernet, data = make_world(tmp_path)
    assert main(_args(supernet, data, tmp_path / "a", "--generations", "1",
                      "--latency-cache", "none")) == 0
    table = pd.read_csv(tmp_path / "a" / "candidates.csv")
    assert not table["latency_cached"].any()
    assert not (supernet / "latency_cache.jsonl").exists()
    assert json.loads((tmp_path / "a" / "search.json").read_text())["latency_cache"] is None
