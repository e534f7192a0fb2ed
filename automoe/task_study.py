"""The task-routing study: at equal FLOPs of the model that serves one language, does a
task-routed MoE (Kudugunta et al. 2021) translate as well as a token-routed MoE, and better
than a dense Transformer, and how fast does what it serves decode?

Three systems share one dense architecture (`TaskStudyPlan.dense`); the two MoE systems
replace every decoder FFN by ``experts`` experts of the same width, top-1:

- ``dense``: the architecture itself;
- ``token-moe``: decoder experts routed per token (serving any language needs all experts);
- ``task-moe``: decoder experts routed per target language; one language is served by its
  extracted model (`supernet.task_extract.for_task`), whose FLOPs are the dense one's.

`automoe.workflows.task_study.run_task_study(plan, out)` runs, resumably: ``data prepare`` (multilingual), ``train
--subnet`` of each system with each seed (from scratch, same data and budget), then per
model and language the test loss, NLL, BLEU and chrF with per-sentence archives
(``sentences/``), the paired tests of every pair of systems per language (seeds pooled:
the two seeds' test sets side by side; Holm over the table per metric), the decoding
throughput of each served model in torch and ONNX Runtime, and its parameters and weight
bytes. Files: ``scores.csv``, ``comparisons.csv``, ``serving.csv``, ``study.json``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automoe.bleu import corpus_scores
from automoe.data import PrepareOptions, load_split
from automoe.decoding import translate_ids
from automoe.dev_scoring import DevScorer, ScoringSettings
from automoe.export import load_subnet, write_task_model
from automoe.search.compare import with_holm
from automoe.sentences import load_sentence_scores, save_sentence_scores
from automoe.stats import loss_with_se, paired_loss_test, paired_stats_test
from automoe.training.presets import FinalScoring, TrainRecipe
from search_spaces.config import SubnetConfig
from supernet.params import weight_bytes

__all__ = ["TaskStudyPlan", "TASK_STUDY_PLANS", "SYSTEMS", "systems", "score_tests",
           "serving_table", "compare_systems"]

SYSTEMS = ("dense", "token-moe", "task-moe")
_PAIRS = (("task-moe", "dense"), ("token-moe", "dense"), ("task-moe", "token-moe"))


@dataclass(frozen=True)
class TaskStudyPlan:
    """What the study runs.

    Attributes:
        name: the plan's name.
        corpus, targets, prepare: the multilingual corpus, its target languages and how it
            is turned into ids.
        dense: the dense architecture (a `SubnetConfig` dict, one expert per layer).
        experts: experts per decoder layer of the MoE systems (each of the dense width).
        train: the training of every model (budget, schedule); each model's seed is set
            on top.
        final: how each training run ends (its final weights, test decoding).
        seeds: training seeds of every system.
        test_sentences: test pairs scored per language (0: all).
        beam, lenpen: test decoding.
        throughput_sentences: test sources per language decoded for the throughput.
        onnx: also measure the throughput in ONNX Runtime (needs the onnx extra).
        resamples: paired-test resamples.
    """

    name: str
    dense: dict
    corpus: str = "bible-en-x"
    targets: tuple[str, ...] = ("de", "fr", "es")
    prepare: PrepareOptions = PrepareOptions()
    experts: int = 4
    train: TrainRecipe = TrainRecipe()
    final: FinalScoring = FinalScoring()
    seeds: tuple[int, ...] = (0, 1)
    test_sentences: int = 0
    beam: int = 4
    lenpen: float = 0.6
    throughput_sentences: int = 100
    onnx: bool = True
    resamples: int = 1000


_BIBLE_DENSE = {"encoder_embed_dim": 128, "decoder_embed_dim": 128, "qkv_dim": 128,
                "encoder_expert_dims": [[256]] * 3, "encoder_heads": [4] * 3,
                "encoder_top_k": [1] * 3, "decoder_expert_dims": [[256]] * 2,
                "decoder_heads": [4] * 2, "decoder_cross_heads": [4] * 2,
                "decoder_ende_attn": [1] * 2, "decoder_top_k": [1] * 2}

TASK_STUDY_PLANS = {
    # en -> de, fr, es at demo_small's largest dense widths; about 3 hours on 2 CPU cores
    "bible-x": TaskStudyPlan(
        name="bible-x", dense=_BIBLE_DENSE,
        prepare=PrepareOptions(max_len=96, vocab_size=4000),
        train=TrainRecipe("demo", {"lr": 0.002, "max_updates": 2400, "warmup_updates": 200,
                                   "valid_sentences": 300, "validate_every": 400,
                                   "save_every": 200, "shared_positions": True}),
        final=FinalScoring(test_sentences=1)),
}


def systems(plan: TaskStudyPlan) -> dict[str, SubnetConfig]:
    """The three systems' configs (module doc)."""
    dense = SubnetConfig.from_dict(plan.dense, source=f"plan {plan.name}: dense")
    if not dense.is_dense:
        raise ValueError(f"plan {plan.name}: 'dense' has a layer with several experts")
    moe = dataclasses.replace(
        dense, decoder_expert_dims=tuple(d * plan.experts for d in dense.decoder_expert_dims))
    return {"dense": dense, "token-moe": moe,
            "task-moe": dataclasses.replace(moe, decoder_routing="task")}


def _model_dir(root: Path, name: str, seed: int) -> Path:
    return root / "train" / f"{name}-s{seed}" / "model"


def score_tests(plan: TaskStudyPlan, root: Path, data: Path, say: Callable[[str], None]
               ) -> pd.DataFrame:
    """Per (system, seed, language): test loss, NLL and BLEU/chrF, archives in sentences/."""

    rows = []
    for name in SYSTEMS:
        for seed in plan.seeds:
            model = load_subnet(_model_dir(root, name, seed)).model
            for lang in plan.targets:
                settings = ScoringSettings(dev_sentences=plan.test_sentences, task=lang,
                                           beam=plan.beam, lenpen=plan.lenpen, n_bootstrap=0)
                scorer = DevScorer(data, settings, label_smoothing=0.0, split="test")
                sentences = scorer.sentences(model)
                save_sentence_scores(root / "sentences" / f"{name}-s{seed}-{lang}", sentences,
                                     scorer.refs)
                nll, nll_se = loss_with_se(sentences.nll, sentences.tokens)
                corpus = corpus_scores(sentences.hyps, scorer.refs)
                rows.append({"system": name, "seed": seed, "task": lang,
                             "sentences": scorer.n, "test_bleu": corpus["bleu"],
                             "test_chrf": corpus["chrf"], "test_nll": nll,
                             "test_nll_se": nll_se})
                say(f"test {name} seed {seed} {lang}: BLEU {corpus['bleu']:.2f}, "
                    f"chrF {corpus['chrf']:.2f}, NLL {nll:.4f}")
    return pd.DataFrame(rows)


def _served(root: Path, name: str, seed: int, lang: str) -> Path:
    """The model dir that serves `lang`: the task-routed model's extraction, else itself."""

    model = _model_dir(root, name, seed)
    if name != "task-moe":
        return model
    out = root / "served" / f"{name}-s{seed}-{lang}"
    if not (out / "config.json").is_file():
        write_task_model(model, lang, out, overwrite=True)
    return out


def serving_table(plan: TaskStudyPlan, root: Path, data: Path, say: Callable[[str], None]
             ) -> pd.DataFrame:
    """Per (system, language) of seed 0: the served model's parameters, weight bytes and
    decoding throughput (beam ``plan.beam``) in torch and ONNX Runtime, each the median of
    3 timed passes over the first ``throughput_sentences`` test sources; also whether its
    translations equal the routed model's."""

    if plan.onnx:
        from automoe.onnx_export import export_subnet_onnx, require_onnx

        require_onnx()

    def decode(model: Any, sources: list) -> list[list[int]]:
        return translate_ids(model, sources, beam=plan.beam, lenpen=plan.lenpen, device="cpu")

    seed = plan.seeds[0]
    rows = []
    for name in SYSTEMS:
        routed = load_subnet(_model_dir(root, name, seed))
        for lang in plan.targets:
            served_dir = _served(root, name, seed, lang)
            served = load_subnet(served_dir)
            split = load_split(data, "test").select_task(lang)
            src = [split.src[i] for i in range(min(plan.throughput_sentences, len(split)))]
            same = decode(served.model, src[:20]) == decode(routed.model, src[:20])
            if plan.onnx and not (served_dir / "onnx" / "onnx.json").is_file():
                export_subnet_onnx(served_dir, overwrite=True)
            row: dict[str, Any] = {"system": name, "task": lang, "seed": seed,
                                   "served_key": served.config.key(),
                                   "same_translations_as_routed": bool(same)}
            counts = served.model.count_params()
            row.update(params_total=counts.total - counts.embedding,
                       params_active=counts.active - counts.embedding,
                       weight_bytes=weight_bytes(served.config, served.model.vocab_size).weights)
            for runtime in ("torch", "onnxruntime") if plan.onnx else ("torch",):
                model = (served if runtime == "torch" else
                         load_subnet(served_dir, runtime="onnxruntime")).model
                decode(model, src[:5])  # warm-up
                rates = []
                for _ in range(3):
                    began = time.perf_counter()
                    hyps = decode(model, src)
                    rates.append(sum(len(h) + 1 for h in hyps) / (time.perf_counter() - began))
                row[f"{runtime}_tokens_per_s"] = float(np.median(rates))
            rows.append(row)
            say(f"serving {name} {lang}: {row['torch_tokens_per_s']:.0f} tok/s torch, "
                f"{row.get('onnxruntime_tokens_per_s', float('nan')):.0f} tok/s ORT, "
                f"same translations as the routed model: {same}")
    return pd.DataFrame(rows)


def compare_systems(sentences: Path, tasks: Sequence[str], seeds: Sequence[int], *,
                    resamples: int = 1000) -> pd.DataFrame:
    """Per language and pair of systems (`_PAIRS`): the difference of test BLEU, chrF and
    NLL with its 95% interval and paired p-value (`automoe.stats`), seeds pooled (each
    seed's test set side by side, sentence i of seed s paired across systems), Holm over the
    table per metric. Reads the archives ``sentences/<system>-s<seed>-<task>.npz``."""

    def pooled(system: str, task: str) -> dict[str, np.ndarray]:
        parts = [load_sentence_scores(sentences / f"{system}-s{s}-{task}.npz") for s in seeds]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    rows = []
    for task in tasks:
        for a, b in _PAIRS:
            x, y = pooled(a, task), pooled(b, task)
            if not np.array_equal(x["tokens"], y["tokens"]):
                raise ValueError(f"{a} and {b} on {task}: archives of different sentences")
            row: dict[str, Any] = {"task": task, "a": a, "b": b, "sentences": len(x["tokens"]),
                                   "seeds": ",".join(map(str, seeds))}
            for metric in ("bleu", "chrf"):
                t = paired_stats_test(metric, x[f"{metric}_stats"], y[f"{metric}_stats"],
                                      resamples=resamples)
                row.update({f"{metric}_a": t.a, f"{metric}_b": t.b, f"{metric}_delta": t.delta,
                            f"{metric}_delta_lo": t.lo, f"{metric}_delta_hi": t.hi,
                            f"{metric}_p": t.p_value})
            t = paired_loss_test(x["nll"], y["nll"], x["tokens"], resamples=resamples)
            row.update({"nll_a": t.a, "nll_b": t.b, "nll_delta": t.delta,
                        "nll_delta_lo": t.lo, "nll_delta_hi": t.hi, "nll_p": t.p_value})
            rows.append(row)
    return with_holm(pd.DataFrame(rows), ("bleu", "chrf", "nll"))
