"""The task-routing study end to end on the toy multilingual corpus, at a few updates:
every file it promises, the systems it compares, and its comparisons recomputed by hand
from the per-sentence archives (sacreBLEU on the stored statistics, NLL per token)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from search_helpers import make_multilingual_data

from automoe.sentences import load_sentence_scores
from automoe.task_study import SYSTEMS, TaskStudyPlan, systems
from automoe.training.presets import FinalScoring, TrainRecipe
from automoe.workflows.task_study import run_task_study

TINY = {"encoder_embed_dim": 16, "decoder_embed_dim": 16, "qkv_dim": 16,
        "encoder_expert_dims": [[32]], "encoder_heads": [2], "encoder_top_k": [1],
        "decoder_expert_dims": [[32]], "decoder_heads": [2], "decoder_cross_heads": [2],
        "decoder_ende_attn": [1], "decoder_top_k": [1]}


def test_systems_share_the_served_architecture():
    plan = TaskStudyPlan(name="t", dense=TINY, experts=3)
    s = systems(plan)
    assert s["dense"].is_dense and s["token-moe"].decoder_experts == (3,)
    assert s["task-moe"].decoder_routing == "task" and s["token-moe"].decoder_routing == "token"
    assert dataclasses.replace(s["task-moe"], decoder_routing="token") == s["token-moe"]
    with pytest.raises(ValueError, match="'dense' has a layer with several experts"):
        systems(dataclasses.replace(plan, dense=s["token-moe"].to_dict()))


def test_task_study_runs_and_its_comparisons_recompute(tmp_path):
    data = make_multilingual_data(tmp_path / "world")
    plan = TaskStudyPlan(
        name="tiny", dense=TINY, targets=("de", "fr"), experts=2, seeds=(0, 1),
        train=TrainRecipe("demo", {"max_updates": 6, "warmup_updates": 2, "max_tokens": 400,
                                   "valid_sentences": 8, "validate_every": 3}),
        final=FinalScoring(test_sentences=1),
        test_sentences=6, beam=1, throughput_sentences=4, onnx=False, resamples=200)
    out = tmp_path / "study"
    comparisons = run_task_study(plan, out, data_dir=data, quiet=True, echo=lambda s: None)
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == len(SYSTEMS) * 2 * 2
    serving = pd.read_csv(out / "serving.csv")
    assert serving["same_translations_as_routed"].all()
    task = serving[serving["system"] == "task-moe"].set_index("task")
    dense = serving[serving["system"] == "dense"].set_index("task")
    token = serving[serving["system"] == "token-moe"].set_index("task")
    # what serves one language: the task model costs the dense one's bytes, token-MoE more
    assert (task["weight_bytes"] == dense["weight_bytes"]).all()
    assert (token["weight_bytes"] > dense["weight_bytes"]).all()
    table = pd.read_csv(comparisons)
    assert len(table) == 2 * 3 and {"bleu_p_holm", "nll_p_holm", "holm_family"} <= set(table)
    row = table[(table["task"] == "fr") & (table["a"] == "task-moe") & (table["b"] == "dense")]
    a = [load_sentence_scores(out / "sentences" / f"task-moe-s{s}-fr.npz") for s in (0, 1)]
    b = [load_sentence_scores(out / "sentences" / f"dense-s{s}-fr.npz") for s in (0, 1)]
    nll = [sum(p["nll"].sum() for p in x) / sum(p["tokens"].sum() for p in x) for x in (a, b)]
    # (the table keeps 6 significant digits)
    assert float(row["nll_delta"].iloc[0]) == pytest.approx(nll[0] - nll[1], rel=1e-5)
    from sacrebleu.metrics import BLEU

    def bleu(parts):
        stats = np.concatenate([p["bleu_stats"] for p in parts]).sum(axis=0)
        return BLEU()._compute_score_from_stats(stats.tolist()).score

    assert float(row["bleu_delta"].iloc[0]) == pytest.approx(bleu(a) - bleu(b), abs=1e-4)
    # resuming a finished study redoes nothing but the comparisons
    before = (out / "scores.csv").stat().st_mtime_ns
    run_task_study(plan, out, data_dir=data, quiet=True, echo=lambda s: None)
    assert (out / "scores.csv").stat().st_mtime_ns == before
