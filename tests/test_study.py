"""The reference study's own logic (automoe.study): the dense subnet matched to each MoE
subnet by FLOPs (brute force) and the MoE-vs-dense table (sacreBLEU as the oracle). The
steps themselves are the commands tested in their own modules."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import BLEU

from automoe.study import STUDY_PLANS, matched_dense, moe_vs_dense


def test_matched_dense_is_the_nearest_flops_on_a_log_scale():
    rng = random.Random(0)
    for _ in range(50):
        moe = pd.DataFrame({"key": [f"m{i}" for i in range(4)],
                            "flops": [rng.uniform(1e7, 1e9) for _ in range(4)]})
        dense = pd.DataFrame({"key": [f"d{i}" for i in range(6)],
                              "flops": [rng.uniform(1e7, 1e9) for _ in range(6)],
                              "loss": [rng.uniform(4, 6) for _ in range(6)]})
        got = matched_dense(moe, dense)
        for _, m in moe.iterrows():
            best = min(dense.itertuples(), key=lambda d: (abs(math.log(d.flops / m.flops)),
                                                           d.loss))
            assert got[m.key] == best.key


def _run(root, name, keys, hyps, flops):
    run = root / name
    rows = []
    for key, lines, f in zip(keys, hyps, flops, strict=True):
        model = run / "retrain" / "models" / key / "model"
        model.mkdir(parents=True)
        (model.parent / "test.hyp.txt").write_text("".join(h + "\n" for h in lines))
        rows.append({"key": key, "status": "finished", "flops": f, "experts": "enc 2 / dec 1",
                     "loss": 5.0, "model_dir": str(model)})
    pd.DataFrame(rows).to_csv(run / "retrained.csv", index=False)
    return run


def test_moe_vs_dense_scores_each_pair_with_intervals_and_a_paired_test(tmp_path):
    rng = random.Random(1)
    words = ["und", "er", "sprach", "zu", "ihnen", "das", "ist", "gut", "der", "herr", "gott"]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) for _ in range(120)]

    def noisy(p):
        return [" ".join(w if rng.random() > p else rng.choice(words) for w in r.split())
                for r in refs]

    good, bad = noisy(0.1), noisy(0.5)
    moe = _run(tmp_path, "moe", ["m1"], [good], [2e8])
    dense = _run(tmp_path, "dense", ["d1"], [bad], [2.2e8])
    table = moe_vs_dense({"m1": "d1"}, moe, dense, refs, resamples=300)
    row = table.iloc[0]
    assert row["moe_test_bleu"] == pytest.approx(BLEU().corpus_score(good, [refs]).score)
    assert row["dense_test_bleu"] == pytest.approx(BLEU().corpus_score(bad, [refs]).score)
    assert row["bleu_delta"] == pytest.approx(row["moe_test_bleu"] - row["dense_test_bleu"])
    assert row["bleu_p"] < 0.01 and row["bleu_delta_lo"] > 0
    assert row["moe_test_bleu_lo"] < row["moe_test_bleu"] < row["moe_test_bleu_hi"]
    assert row["flops_ratio"] == pytest.approx(2e8 / 2.2e8) and row["test_sentences"] == 120


def test_moe_vs_dense_adds_the_paired_test_nll_when_given_the_likelihoods(tmp_path):
    rng = np.random.default_rng(0)
    refs = ["das ist gut"] * 80
    moe = _run(tmp_path, "moe", ["m1"], [refs], [2e8])
    dense = _run(tmp_path, "dense", ["d1"], [refs], [2e8])
    tokens = rng.integers(3, 20, size=80)
    sums = {"m1": tokens * 4.0 + rng.normal(0, 1, 80), "d1": tokens * 4.3 + rng.normal(0, 1, 80)}
    seen = []

    def nll(model_dir, n):
        seen.append((model_dir.parent.name, n))
        return sums[model_dir.parent.name], tokens

    row = moe_vs_dense({"m1": "d1"}, moe, dense, refs, resamples=300, nll=nll).iloc[0]
    assert seen == [("m1", 80), ("d1", 80)]
    assert row["moe_test_nll"] == pytest.approx(sums["m1"].sum() / tokens.sum())
    assert row["dense_test_nll"] == pytest.approx(sums["d1"].sum() / tokens.sum())
    assert row["nll_delta"] == pytest.approx(row["moe_test_nll"] - row["dense_test_nll"])
    assert row["nll_delta_lo"] < row["nll_delta"] < row["nll_delta_hi"] < 0
    assert row["nll_p"] < 0.01 and row["moe_test_nll_se"] > 0
    assert "nll_delta" not in moe_vs_dense({"m1": "d1"}, moe, dense, refs, resamples=300)


@pytest.mark.parametrize("name", sorted(STUDY_PLANS))
def test_the_shipped_plans_ask_for_a_fidelity_study_that_can_fail(name):
    """Each plan's settings, built as the study builds them, ask for one budget for every
    standalone model and a banded study: >= 3 bands of >= 6 subnets (>= 2 dense, >= 2
    MoE), 2 seeds, 6 doubled; its space has the bands; and every training recipe (the
    supernet's, each variant's, the few-shot ones', the standalone models') resolves."""
    from automoe.fidelity import FidelitySettings, choose_banded
    from automoe.training.presets import get_preset
    from search_spaces import load_space

    plan = STUDY_PLANS[name]
    assert "max_updates" in plan.standalone["overrides"] and plan.top >= 4
    settings = FidelitySettings(supernet="S", data="D", out="O", retrain=plan.standalone,
                                **plan.fidelity)
    assert settings.bands >= 3 and settings.per_band >= 6 and settings.seeds >= 2
    assert settings.double >= 6 and settings.band_width <= 0.05
    assert 2 <= settings.dense_per_band <= settings.per_band - 2
    chosen = choose_banded(load_space(plan.space), bands=settings.bands,
                           per_band=settings.per_band, dense_per_band=settings.dense_per_band,
                           band_width=settings.band_width, seed=settings.seed,
                           pool=settings.pool)
    assert len(chosen) == settings.bands * settings.per_band
    plan.supernet.options("supernet")
    for _, overrides in (*plan.variants, ("few-shot", plan.few_shot)):
        plan.supernet.with_overrides(overrides).options("supernet")
    get_preset(plan.standalone["preset"], "subnet").override(
        dict(plan.standalone["overrides"])).resolve(1)


def test_step_clock_keeps_the_time_of_a_step_killed_midway(tmp_path):
    """A study SIGKILLed inside a step still has that step's time (up to one flush) in
    study.json, and a resumed step adds to it."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from automoe.study import StepClock

    state = tmp_path / "study.json"
    code = ("import time, pathlib\n"
            "from automoe.study import StepClock\n"
            f"clock = StepClock(pathlib.Path({str(state)!r}), {{'p': 1}}, {{}}, "
            "flush_every=0.05)\n"
            "with clock.timing('fidelity'):\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if state.is_file() and json.loads(state.read_text())["seconds"].get("fidelity", 0) > 0.3:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = json.loads(state.read_text())
    assert kept["plan"] == {"p": 1} and kept["seconds"]["fidelity"] > 0.3

    clock = StepClock(state, kept["plan"], kept["seconds"], flush_every=60)
    with clock.timing("fidelity"):
        time.sleep(0.01)
    with clock.timing("plot"):
        pass
    again = json.loads(state.read_text())["seconds"]
    assert again["fidelity"] > kept["seconds"]["fidelity"] and set(again) == {"fidelity", "plot"}


def test_a_running_study_accepts_new_variants_and_refuses_another_plan(tmp_path, monkeypatch):
    import dataclasses

    from automoe.study import plan_json
    from automoe.workflows import study as study_module

    plan = STUDY_PLANS["bible-bands"]
    bare = dataclasses.replace(plan, variants=())
    (tmp_path / "study.json").write_text(json.dumps(
        {"plan": plan_json(bare), "seconds": {"data": 1.0}}))

    class Started(Exception):
        pass

    def first_step(*args, **kwargs):
        raise Started()

    monkeypatch.setattr(study_module, "prepare_corpus", first_step)
    with pytest.raises(Started):  # the plan check passed: the first step was reached
        study_module.run_study(plan, tmp_path, quiet=True)
    other = dataclasses.replace(plan, supernet=plan.supernet.with_overrides({"lr": 0.01}))
    with pytest.raises(ValueError, match="another plan"):
        study_module.run_study(other, tmp_path, quiet=True)
