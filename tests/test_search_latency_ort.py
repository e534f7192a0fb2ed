"""A search on latency in torch and in ONNX Runtime at once: the latency phase measures
each candidate in both runtimes, the tables report what the shared latency cache recorded
for each runtime's protocol, and search.json states both protocols."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from search_helpers import make_world

from automoe.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_search_on_torch_and_onnxruntime_latency(tmp_path):
    supernet, data = make_world(tmp_path)
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(supernet), "--data", str(data), "--out", str(out),
                 "--objectives", "loss,latency,latency_ort", "--population", "2",
                 "--generations", "1", "--dev-sentences", "4", "--workers", "0", "--seed", "1",
                 "--latency-runs", "2", "--latency-warmup", "0", "--no-baselines",
                 "--quiet"]) == 0
    table = pd.read_csv(out / "candidates.csv", dtype={"key": str})
    assert len(table) >= 2
    for name in ("latency", "latency_ort"):
        assert (table[f"{name}_ms"] > 0).all()
        assert (table[f"{name}_p10_ms"] <= table[f"{name}_p90_ms"]).all()
    assert table["latency_ort_device"].str.contains("onnxruntime").all()
    assert not table["latency_device"].str.contains("onnxruntime").any()

    # the cache holds one record per subnet and runtime; the tables report them
    records = [json.loads(line) for line in
               (supernet / "latency_cache.jsonl").read_text().splitlines()]
    by_runtime: dict[str, dict[str, float]] = {"torch": {}, "onnxruntime": {}}
    for r in records:
        by_runtime[r["protocol"].get("runtime", "torch")][r["subnet_key"]] = r["latency_ms"]
    assert set(by_runtime["torch"]) == set(by_runtime["onnxruntime"]) == set(table["key"])
    for name, runtime in (("latency", "torch"), ("latency_ort", "onnxruntime")):
        expected = table["key"].map(by_runtime[runtime]).to_numpy()
        assert table[f"{name}_ms"].to_numpy() == pytest.approx(expected, rel=1e-9)

    protocols = json.loads((out / "search.json").read_text())["protocols"]
    assert protocols["latency_ort"].startswith("onnxruntime")
    assert "onnxruntime" not in protocols["latency"]


def test_onnxruntime_latency_on_cuda_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(tmp_path / "none"), "--data", str(tmp_path / "none"),
                 "--out", str(out), "--objectives", "loss,latency_ort", "--device", "cuda",
                 "--workers", "0", "--quiet"]) == 2
    assert "'latency_ort' is measured in ONNX Runtime on CPU" in capsys.readouterr().err
    assert not out.exists()
