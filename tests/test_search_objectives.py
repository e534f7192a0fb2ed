"""Objective and constraint parsing for `automoe search` (pure, no torch, no Ray)."""

from __future__ import annotations

import pytest

from automoe.search.objectives import (
    DEFAULT_OBJECTIVES,
    METRICS,
    needed_metrics,
    parse_constraint,
    parse_objectives,
)


def test_default_objectives_minimise_dev_loss_and_costs():
    objs = parse_objectives(",".join(DEFAULT_OBJECTIVES))
    assert [(o.name, o.direction) for o in objs] == [
        ("loss", "min"), ("flops", "min"), ("latency_ms", "min")]


def test_every_metric_parses_to_its_column():
    for name, metric in METRICS.items():
        if metric.kind == "report":  # a column the tables carry, never searched
            continue
        (obj,) = parse_objectives(name)
        assert obj.name == metric.column
        assert obj.direction == metric.direction
    assert parse_objectives(["loss:max"])[0].direction == "max"


@pytest.mark.parametrize("text, column, op, bound", [
    ("latency<=80ms", "latency_ms", "<=", 80.0),
    ("latency <= 0.5s", "latency_ms", "<=", 500.0),
    ("flops<=2e9", "flops", "<=", 2e9),
    ("flops<=2.5G", "flops", "<=", 2.5e9),
    ("params<=10M", "params", "<=", 1e7),
    ("bleu>=20", "bleu", ">=", 20.0),
    ("latency_ms<=80", "latency_ms", "<=", 80.0),
])
def test_constraints(text, column, op, bound):
    c = parse_constraint(text)
    assert (c.name, c.op) == (column, op)
    assert c.bound == pytest.approx(bound)


@pytest.mark.parametrize("text, message", [
    ("speed<=3", "unknown metric 'speed'"),
    ("latency<80ms", "expected NAME<=NUMBER"),
    ("latency<=80GB", "unit 'GB'"),
    ("bleu>=20ms", "unit 'ms'"),
])
def test_bad_constraints(text, message):
    with pytest.raises(ValueError, match=message):
        parse_constraint(text)


def test_bad_objectives():
    with pytest.raises(ValueError, match="unknown metric 'accuracy'.*expected one of"):
        parse_objectives("bleu,accuracy")
    with pytest.raises(ValueError, match="twice"):
        parse_objectives("latency,latency_ms")
    with pytest.raises(ValueError, match="empty"):
        parse_objectives(" , ")


def test_needed_metrics_adds_constrained_ones_once():
    objs = parse_objectives("bleu,flops")
    cons = [parse_constraint("latency<=50ms"), parse_constraint("flops<=1e9")]
    assert [m.name for m in needed_metrics(objs, cons)] == ["bleu", "flops", "latency"]
    assert {m.kind for m in needed_metrics(objs, cons)} == {"score", "cheap", "latency"}


def test_latency_in_each_runtime_is_its_own_objective():
    from automoe.search.objectives import latency_metric

    objs = parse_objectives("loss,latency,latency_ort")
    assert [o.name for o in objs] == ["loss", "latency_ms", "latency_ort_ms"]
    assert all(o.direction == "min" for o in objs[1:])
    assert parse_constraint("latency_ort<=0.5s") == parse_constraint("latency_ort_ms<=500")
    assert parse_constraint("latency_ort<=0.5s").name == "latency_ort_ms"
    metrics = needed_metrics(objs, [parse_constraint("latency_ort<=9ms")])
    assert [(m.name, m.kind, m.runtime) for m in metrics[1:]] == [
        ("latency", "latency", "torch"), ("latency_ort", "latency", "onnxruntime")]
    assert latency_metric("onnxruntime") is METRICS["latency_ort"]
    assert latency_metric("torch") is METRICS["latency"]
    with pytest.raises(ValueError, match="'tvm'"):
        latency_metric("tvm")
