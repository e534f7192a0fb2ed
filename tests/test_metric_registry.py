"""The metric registry (`automoe.metrics`) is the one place a metric is defined: a new
objective registered there is computed by the search, ordered into its tables, recorded
with its protocol, selectable on the command line's forms and drawn by the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from search_helpers import make_world

from automoe.metrics import (
    METRICS,
    AxisStyle,
    Metric,
    get_metric,
    register,
    registered,
    table_order,
)
from automoe.plot_axes import axes
from automoe.search.objectives import parse_constraint, parse_objectives
from search_spaces.config import SubnetConfig


def _depth(context, config: SubnetConfig) -> float:
    return float(config.encoder_layers + config.decoder_layers)


DEPTH = Metric("depth", "layers", "min", "cheap", "encoder plus decoder layers",
               cost=_depth, protocol=lambda c: "layers counted in the config",
               axis=AxisStyle("layers ({protocol})"), title="layers")


def test_the_registry_is_consistent():
    columns = [m.column for m in METRICS.values()]
    assert len(set(columns)) == len(columns) == len(table_order())
    assert all(get_metric(m.column) is m and get_metric(m.name) is m for m in METRICS.values())
    # every cost a search reports can be drawn, including those plots once lacked
    assert {"weight_bytes", "max_experts", "predicted_latency_ms", "params_active"} <= set(axes())
    with pytest.raises(ValueError, match="a cheap metric"):
        Metric("x", "x", "min", "cheap", "no cost")
    with pytest.raises(ValueError, match="direction"):
        Metric("x", "x", "up", "score", "bad direction")
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("flops", "flops2", "min", "report", "taken name"))


def test_report_metrics_are_not_searchable():
    with pytest.raises(ValueError, match="'chrf' is reported, not searched"):
        parse_objectives("loss,chrf")
    with pytest.raises(ValueError, match="reported, not searched"):
        parse_constraint("bleu_retrained>=10")


def test_a_registered_objective_reaches_tables_protocols_and_plots(tmp_path):
    import pandas as pd

    from automoe.plots import default_pairs, load_run, plot_runs
    from automoe.search import SearchSettings, run_search

    supernet, data = make_world(tmp_path / "world")
    run = tmp_path / "run"
    with registered(DEPTH):
        assert parse_constraint("depth<=5").name == "layers" and "layers" in axes()
        run_search(SearchSettings(supernet=str(supernet), data=str(data), out=str(run),
                                  objectives=("loss", "depth"), generations=2, population=4,
                                  workers=0, dev_sentences=4, baselines=False,
                                  progress=False))
        table = pd.read_csv(run / "candidates.csv", dtype={"key": str})
        front = pd.read_csv(run / "pareto.csv", dtype={"key": str})
        meta = json.loads((run / "search.json").read_text())
        loaded = load_run(run)
        assert default_pairs([loaded]) == [("layers", "loss")]
        written = plot_runs([loaded], tmp_path / "plots", formats=("png",))
    assert "depth" not in METRICS and "layers" not in axes()  # the block unregistered it
    # the value is the config's own layer count, next to the run's other metrics
    oracle = [_depth(None, SubnetConfig.from_json(c)) for c in table["config"]]
    np.testing.assert_array_equal(table["layers"].to_numpy(float), oracle)
    columns = list(table.columns)
    assert columns.index("loss") < columns.index("layers") < columns.index("flops")
    assert meta["protocols"]["depth"] == "layers counted in the config"
    assert meta["metrics"]["layers"] == "encoder plus decoder layers"
    # the front is the brute-force non-dominated set of (loss, layers)
    points = table[["loss", "layers"]].to_numpy(float)
    dominated = [any((q <= p).all() and (q < p).any() for q in points) for p in points]
    assert set(front["key"]) == set(table["key"][~np.array(dominated)])
    assert [p.name for p in written] == ["loss_vs_layers.png"]
