"""Pareto plots: the front mask against brute force, and real image files with every point."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from automoe.cli import main
from automoe.plots import RunTable, load_run, pareto_mask, plot_front


def _brute_front(x, y, x_max, y_max):
    """Every pair compared; a row with a NaN is never on the front and dominates nothing."""
    sx, sy = (-x if x_max else x), (-y if y_max else y)
    valid = ~(np.isnan(sx) | np.isnan(sy))
    out = []
    for i in range(len(x)):
        dominated = any(
            sx[j] <= sx[i] and sy[j] <= sy[i] and (sx[j] < sx[i] or sy[j] < sy[i])
            for j in range(len(x)) if valid[j]
        )
        out.append(bool(valid[i]) and not dominated)
    return np.array(out)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("dirs", [(False, True), (True, True), (False, False)])
def test_pareto_mask_equals_brute_force(seed, dirs):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # Few distinct values so ties and duplicates occur.
    x = rng.integers(0, 8, n).astype(float)
    y = rng.integers(0, 8, n).astype(float)
    y[rng.random(n) < 0.1] = np.nan  # a failed score
    mask = pareto_mask(x, y, x_max=dirs[0], y_max=dirs[1])
    brute = _brute_front(x, y, *dirs)
    # Duplicates of a front point are all on the front (nothing dominates its equal).
    assert np.array_equal(mask, brute)


def _fake_run(tmp_path, name, n, seed):
    rng = np.random.default_rng(seed)
    flops = rng.uniform(1e8, 1e9, n)
    table = pd.DataFrame({
        "key": [f"{name}{i:04d}" for i in range(n)],
        "flops": flops,
        "latency_ms": flops / 1e7 + rng.uniform(0, 5, n),
        "bleu": 10 * np.log(flops / 1e8) + rng.normal(0, 1, n),
        "is_dense": rng.integers(0, 2, n).astype(bool),
        "origin": ["baseline"] + ["mutation"] * (n - 1),
        "baseline": ["largest"] + [""] * (n - 1),
    })
    run = tmp_path / name
    run.mkdir()
    table.to_csv(run / "candidates.csv", index=False)
    (run / "search.json").write_text(json.dumps({
        "protocols": {"flops": "b1 30+30 tok"},
        "settings": {"objectives": ["bleu", "flops", "latency"]}}))
    return run, table


def test_plot_cli_writes_images_with_all_points(tmp_path):
    run_a, table_a = _fake_run(tmp_path, "moe", 30, 0)
    run_b, _ = _fake_run(tmp_path, "dense", 20, 1)
    out = tmp_path / "plots"
    assert main(["plot", str(run_a), str(run_b), "-o", str(out)]) == 0
    for stem in ("bleu_vs_flops", "bleu_vs_latency_ms"):
        image = imread(out / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    # Every candidate is drawn exactly once as a faint point, the front on top of it.
    fig, ax = plt.subplots()
    run = load_run(run_a)
    front = plot_front(ax, [run], "flops", "bleu")
    faint = sum(len(c.get_offsets()) for c in ax.collections if c.get_alpha() == 0.25)
    assert faint == len(table_a) - 1  # the baseline row is a star instead
    cand = table_a.iloc[1:]
    expected_front = pareto_mask(cand.flops.to_numpy(), cand.bleu.to_numpy(),
                                 x_max=False, y_max=True).sum()
    assert front == expected_front
    assert "2×MACs" in ax.get_xlabel() and "b1 30+30 tok" in ax.get_xlabel()
    plt.close(fig)


def test_default_plots_follow_the_runs_objectives(tmp_path):
    """A search on (loss, flops) has no BLEU column: the default plot is loss vs FLOPs."""
    run, table = _fake_run(tmp_path, "lossrun", 25, 2)
    table = table.drop(columns=["bleu", "latency_ms"]).assign(
        loss=lambda t: 7 - np.log(t.flops / 1e8), loss_se=0.02)
    table.to_csv(run / "candidates.csv", index=False)
    (run / "search.json").write_text(json.dumps({"settings": {"objectives": ["loss",
                                                                            "flops"]}}))
    out = tmp_path / "plots"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss_vs_flops.png", "loss_vs_flops.svg"]


def test_a_loss_search_plots_its_fronts_bleu_from_the_comparisons(tmp_path):
    run, table = _fake_run(tmp_path, "lossbleu", 12, 4)
    table = table.drop(columns=["bleu"]).assign(loss=lambda t: 7 - np.log(t.flops / 1e8))
    table.to_csv(run / "candidates.csv", index=False)
    (run / "search.json").write_text(json.dumps({"settings": {"objectives": ["loss",
                                                                            "flops"]}}))
    front = table["key"].iloc[1:4].tolist()
    pd.DataFrame({"key": front, "baseline": "largest", "baseline_key": table["key"].iloc[0],
                  "bleu": [3.0, 4.0, 5.0], "bleu_lo": [2.0, 3.0, 4.0],
                  "bleu_hi": [4.0, 5.0, 6.0], "bleu_baseline": 6.5, "bleu_lo_baseline": 6.0,
                  "bleu_hi_baseline": 7.0}).to_csv(run / "comparisons.csv", index=False)
    loaded = load_run(run).candidates.set_index("key")
    assert loaded.loc[front, "bleu"].tolist() == [3.0, 4.0, 5.0]
    assert loaded.loc[table["key"].iloc[0], "bleu_hi"] == 7.0  # the baseline's own
    assert loaded["bleu"].isna().sum() == len(table) - 4  # others were not translated
    out = tmp_path / "plots"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"loss_vs_flops.png", "bleu_vs_flops.png"}


def test_a_run_with_paired_tests_plots_the_differences_they_compare(tmp_path):
    from automoe.plot_axes import axes
    from automoe.plots import paired_points

    run, table = _fake_run(tmp_path, "paired", 12, 4)
    front = table["key"].iloc[1:4].tolist()
    comp = pd.DataFrame({"key": front, "baseline": "largest",
                         "baseline_key": table["key"].iloc[0],
                         "loss_delta": [0.02, -0.01, 0.005], "loss_delta_lo": [0.01, -0.02, -0.001],
                         "loss_delta_hi": [0.03, 0.0, 0.011], "loss_p": [0.001, 0.04, 0.2],
                         "loss_p_holm": [0.003, 0.08, 0.2]})
    comp.to_csv(run / "comparisons.csv", index=False)
    loaded = load_run(run)
    pts = paired_points(loaded, "largest", "loss", "flops")
    flops = table.set_index("key").loc[front, "flops"].to_numpy() * axes()["flops"].scale
    assert np.allclose(pts["x"], flops)
    assert pts[["delta", "lo", "hi"]].to_numpy().tolist() == comp[
        ["loss_delta", "loss_delta_lo", "loss_delta_hi"]].to_numpy().tolist()
    assert pts["significant"].tolist() == [True, False, False]  # Holm, not the raw p
    out = tmp_path / "plots"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert (out / "paired_vs_largest.png").read_bytes()[:4] == b"\x89PNG"


def test_front_and_baselines_carry_their_error_bars(tmp_path):
    run_dir, table = _fake_run(tmp_path, "ci", 30, 3)
    table["bleu_lo"], table["bleu_hi"] = table["bleu"] - 0.5, table["bleu"] + 1.5
    table.to_csv(run_dir / "candidates.csv", index=False)
    fig, ax = plt.subplots()
    front = plot_front(ax, [load_run(run_dir)], "flops", "bleu")
    (bars,) = [c for c in ax.containers if c.has_yerr]
    segments = bars.lines[2][0].get_segments()
    assert len(segments) == front + 1  # every front point and the baseline
    spans = sorted((seg[0][1], seg[1][1]) for seg in segments)
    expected = sorted(zip(table.bleu_lo, table.bleu_hi, strict=True))
    assert all(any(np.allclose(s, e) for e in expected) for s in spans)
    plt.close(fig)


def test_plot_rejects_missing_run(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_run_table_is_frozen():
    run = RunTable("x", pd.DataFrame(), {})
    with pytest.raises(AttributeError):
        run.label = "y"


def test_bad_plot_input_writes_nothing_and_a_foreign_out_is_refused(tmp_path, capsys):
    run, _ = _fake_run(tmp_path, "r", 10, 5)
    out = tmp_path / "plots"
    assert main(["plot", str(run), "-o", str(out), "--pairs", "flops:loss"]) == 2
    assert "no run has the columns" in capsys.readouterr().err and not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["plot", str(run), "-o", str(mine)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_latency_in_both_runtimes_gets_a_plot_each(tmp_path):
    """A search on (loss, latency, latency_ort): one plot per latency, the ONNX Runtime one
    labelled with its own protocol and device."""
    run, table = _fake_run(tmp_path, "ortrun", 20, 3)
    table = table.drop(columns=["bleu"]).assign(
        loss=lambda t: 7 - np.log(t.flops / 1e8), loss_se=0.02,
        latency_ort_ms=lambda t: t.latency_ms / 2, latency_ort_p10_ms=lambda t: t.latency_ms / 3,
        latency_ort_p90_ms=lambda t: t.latency_ms, latency_ort_device="cpu-x / onnxruntime 1.0")
    table.to_csv(run / "candidates.csv", index=False)
    (run / "search.json").write_text(json.dumps({
        "protocols": {"latency": "torch text", "latency_ort": "onnxruntime text"},
        "settings": {"objectives": ["loss", "latency", "latency_ort"]}}))
    out = tmp_path / "plots"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == ["loss_vs_latency_ms",
                                                         "loss_vs_latency_ort_ms"]
    fig, ax = plt.subplots()
    plot_front(ax, [load_run(run)], "latency_ort_ms", "loss")
    assert "onnxruntime text" in ax.get_xlabel() and "ONNX Runtime" in ax.get_xlabel()
    plt.close(fig)
