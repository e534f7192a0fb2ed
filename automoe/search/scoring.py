"""Scoring one subnet of a trained supernet: dev loss, BLEU, FLOPs, params, latency.

Pieces, in the order a search uses them:

- the supernet checkpoint is read by `automoe.checkpoints.read_supernet` (a checkpoint that
  does not fit its space fails there) and rebuilt into a model by its `build_model`.
- `CheapCosts` computes the metrics that are pure functions of the config (analytic FLOPs,
  HAT-convention params, predicted latency) in the driver, and checks constraints on them
  against the space's smallest subnet before any scoring starts.
- `CandidateScorerFactory` is what the evaluators ship to each worker: called with the
  shared numpy state dict, it builds a `CandidateScorer` holding the supernet once
  (`SupernetCheckpoint.build_model`).
- `DevScorer` scores any model on the fixed dev set (the first ``dev_sentences`` of the
  valid split, all by default; fixed batches): label-smoothed dev loss and NLL with their
  standard errors over sentences, and BLEU/chrF of its translations (sacreBLEU; greedy or
  beam) with 95% bootstrap intervals. It also returns the per-sentence outputs that paired
  significance tests need (`SentenceScores`).
- `CandidateScorer.score(config)`: `DevScorer` on the supernet's inherited weights in eval
  mode (no dropout), so scores are deterministic.
- `CandidateScorer.latency(config)`: the latency of the *extracted* static model (what
  export ships), HAT's protocol (`automoe.costs.latency`), on the worker's own device, in
  torch and/or (exported to ONNX) in ONNX Runtime;
  with a latency cache file (`automoe.costs.latency_cache`) a measurement of the same
  subnet, protocol, weights and device fingerprint is reused, also one another search
  appended meanwhile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automoe.io_utils import file_sha256
from automoe.search.evaluators import Score
from automoe.search.objectives import latency_metric

if TYPE_CHECKING:
    from automoe.checkpoints import SupernetCheckpoint
    from search_spaces.config import SubnetConfig
    from supernet.transformer import Transformer

__all__ = [
    "check_data",
    "data_identity",
    "CheapCosts",
    "TaskServer",
    "task_server",
    "ScoringSettings",
    "CandidateScorerFactory",
    "CandidateScorer",
    "DevScorer",
    "SentenceScores",
    "sentence_losses",
]


def check_data(data_dir: str | Path, vocab_size: int, *, dev_sentences: int,
               bleu: bool = False) -> int:
    """Checks the data dir against the supernet; returns the dev subset's size. With
    `bleu`, reads the dev references here once, so that the warning of an older data dir
    without them (`SplitData.references`) shows in this process, not only in the actors'
    logs."""
    from automoe.data import load_split, read_meta

    meta = read_meta(data_dir)
    if int(meta["vocab_size"]) != vocab_size:
        raise ValueError(f"{data_dir}: vocabulary {meta['vocab_size']} differs from the "
                         f"supernet's {vocab_size} (trained on other data?)")
    splits = meta.get("splits", {})
    if "valid" not in splits or int(splits["valid"]["pairs"]) == 0:
        raise ValueError(f"{data_dir}: no 'valid' sentences to score subnets on")
    pairs = int(splits["valid"]["pairs"])
    if bleu:
        load_split(data_dir, "valid").references()
    return pairs if dev_sentences == 0 else min(dev_sentences, pairs)


def data_identity(data_dir: str | Path) -> dict[str, Any]:
    """What a data dir is, for resume checks: its resolved path, the input hash its
    ``meta.json`` records (corpus and preparation options) and the tokenizer's sha256."""
    from automoe.data import read_meta

    root = Path(data_dir).resolve()
    return {"path": str(root), "input_hash": read_meta(root).get("input_hash"),
            "spm_sha256": file_sha256(root / "spm.model")}


class TaskServer:
    """What serving one task of a multilingual supernet costs: `served` maps a subnet to
    the config `supernet.task_extract.for_task` gives it for the task's tag."""

    def __init__(self, checkpoint: SupernetCheckpoint, task: str, tag: int) -> None:
        self.task, self.tag = task, tag
        self.model = checkpoint.build_model()

    def served(self, config: SubnetConfig) -> SubnetConfig:
        from supernet.task_extract import served_config

        return served_config(self.model, config, self.tag)


def task_server(checkpoint: SupernetCheckpoint, data: str | Path,
                task: str | None) -> TaskServer | None:
    """The `TaskServer` of ``task`` (None: no task given); ValueError naming the task and
    the data dir's tasks when it has no such task."""
    if task is None:
        return None
    from automoe.data import Tokenizer

    return TaskServer(checkpoint, task, Tokenizer.load(data).task_id(task))


class CheapCosts:
    """Metrics that are pure functions of a config, computed in the driver.

    Args:
        checkpoint: the supernet (space, vocabulary, layer-norm placement).
        predictor: latency predictor dir for ``predicted_latency_ms`` (optional).
        task: cost what serving one task needs (`TaskServer`); None: the config itself.
    """

    def __init__(self, checkpoint: SupernetCheckpoint, *, predictor: str | None = None,
                 task: TaskServer | None = None) -> None:
        from automoe.costs.flops import FlopsProtocol

        self.task = task
        self.space = checkpoint.space
        self.vocab_size = checkpoint.vocab_size
        self.normalize_before = bool(checkpoint.options.get("normalize_before", False))
        self.flops_protocol = FlopsProtocol()
        self.predictor = None
        if predictor:
            from automoe.costs.predictor import LatencyPredictor

            self.predictor = LatencyPredictor.load(predictor)
            self.predictor_path = str(predictor)

    def __call__(self, config: SubnetConfig) -> dict[str, float]:
        """``{"flops", "params", "params_active", "weight_bytes", "max_experts"
        [, "predicted_latency_ms"]}`` of ``config``, or of what serves the task."""
        from automoe.costs.flops import flops
        from supernet.params import count_params, weight_bytes

        if self.task is not None:
            config = self.task.served(config)
        counts = count_params(config, self.vocab_size, normalize_before=self.normalize_before)
        out = {
            "flops": flops(config, self.flops_protocol).flops,
            "params": float(counts.hat),
            "params_active": float(counts.active - counts.embedding),
            "weight_bytes": float(weight_bytes(config, self.vocab_size,
                                               normalize_before=self.normalize_before).weights),
            "max_experts": float(max(config.encoder_experts + config.decoder_experts)),
        }
        if self.predictor is not None:
            if self.task is not None and not self.space.contains(config):
                raise ValueError(f"--predictor with --task {self.task.task}: the served config "
                                 f"{config.key()} is outside space {self.space.name!r}, whose "
                                 "features the predictor reads; use measured latency")
            out["predicted_latency_ms"] = float(self.predictor.predict([config], self.space)[0])
        return out

    pre_filter = __call__  # the evolution's cheap pre-filter: returns metrics, never rejects

    def check_constraints(self, constraints: Any) -> None:
        """ValueError when a bound on a cheap metric excludes even the most favourable
        subnet (the smallest for ``<=``, the largest for ``>=``)."""
        for c in constraints:
            extreme = self.space.smallest() if c.op == "<=" else self.space.largest()
            values = self(extreme)
            if c.name in values and not c.satisfied(values[c.name]):
                which = "smallest" if c.op == "<=" else "largest"
                raise ValueError(
                    f"constraint {c.name}{c.op}{c.bound:g} cannot be met: the {which} subnet "
                    f"of space {self.space.name!r} has {c.name}={values[c.name]:.4g}"
                )

    def protocols(self, latency: dict[str, str]) -> dict[str, Any]:
        """The protocols of the cheap metrics, and ``latency`` (latency metric name ->
        protocol text) for the measured ones."""
        from automoe.costs.report import BYTES_PROTOCOL

        out: dict[str, Any] = {"flops": self.flops_protocol.describe(),
                               "params": "HAT convention: all parameters except the embedding "
                                         "table / tied output projection",
                               "bytes": BYTES_PROTOCOL}
        out.update(latency)
        if self.predictor is not None:
            out["predicted_latency"] = f"predictor {self.predictor_path} " \
                                       f"({self.predictor.kind})"
        return out

    def space_identity(self) -> dict[str, Any]:
        import json

        blob = json.dumps(self.space.to_dict(), sort_keys=True).encode()
        return {"name": self.space.name, "source": self.space.source,
                "sha256": hashlib.sha256(blob).hexdigest()[:16], "size": str(self.space.size())}


@dataclass(frozen=True)
class ScoringSettings:
    """How the workers score (part of the run's identity).

    Attributes:
        dev_sentences: the fixed dev set: the first N sentences of the valid split (0: all).
        task: a multilingual split's target language: its pairs only (None: all), and
            latency measured on the model that serves it (`supernet.task_extract.for_task`).
        bleu: translate the subset and compute BLEU/chrF (else loss only).
        n_bootstrap: sacreBLEU bootstrap resamples for the BLEU/chrF intervals (0: none).
        beam: beam size (1 = greedy); lenpen, max_len_a, max_len_b as in fairseq.
        max_tokens: padded source tokens per batch (loss and decoding).
        device: "cpu" or "cuda" (each worker then owns one GPU).
        threads: torch threads (CPU); the latency measurement uses the same count (in
            ONNX Runtime too).
        latency_runs, latency_warmup: timed / untimed samples per latency.
        latency_runtimes: the runtimes the latency phase measures in ("torch",
            "onnxruntime"), each under its own protocol.
    """

    dev_sentences: int = 0
    task: str | None = None
    bleu: bool = True
    n_bootstrap: int = 1000
    beam: int = 1
    lenpen: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    max_tokens: int = 2048
    device: str = "cpu"
    threads: int = 1
    latency_runs: int = 10
    latency_warmup: int = 2
    latency_runtimes: tuple[str, ...] = ("torch",)

    def latency_protocol(self, vocab_size: int, weights: str = "random",
                         runtime: str = "torch") -> Any:
        """The protocol latency is measured under in ``runtime``; `weights` names the weights
        the model runs with (MoE routing, hence latency, depends on them)."""
        from automoe.costs.latency import LatencyProtocol

        return LatencyProtocol(device=self.device,
                               threads=None if self.device != "cpu" else self.threads,
                               runs=self.latency_runs, warmup=self.latency_warmup,
                               vocab_size=vocab_size, weights=weights, runtime=runtime)


@dataclass(frozen=True)
class CandidateScorerFactory:
    """Picklable recipe for a `CandidateScorer`; ``factory(state) -> CandidateScorer``."""

    checkpoint: SupernetCheckpoint  # without its weights: `__call__` gets them
    data: str
    settings: ScoringSettings
    weights: str = "random"  # latency protocol's weights id: "supernet:<sha256 prefix>"
    latency_cache: str | None = None  # JSONL file of `LatencyCache` (None: always measure)

    @classmethod
    def of(cls, checkpoint: SupernetCheckpoint, data: str | Path, settings: ScoringSettings,
           *, latency_cache: str | Path | None = None) -> CandidateScorerFactory:
        return cls(checkpoint.without_weights(), str(Path(data).resolve()), settings,
                   weights=f"supernet:{checkpoint.sha256[:16]}",
                   latency_cache=None if latency_cache is None
                   else str(Path(latency_cache).resolve()))

    def __call__(self, state: dict[str, np.ndarray]) -> CandidateScorer:
        return CandidateScorer(self, state)


@dataclass(frozen=True)
class SentenceScores:
    """Per-sentence outputs of one model on the dev set (corpus order), for paired tests.

    Attributes:
        loss: [N] label-smoothed loss sums per sentence (nats).
        nll: [N] negative log-likelihood sums per sentence (nats).
        tokens: [N] labelled target tokens per sentence (EOS included).
        hyps: N detokenised translations ([] when BLEU is not scored).
    """

    loss: np.ndarray
    nll: np.ndarray
    tokens: np.ndarray
    hyps: list[str]


def sentence_losses(model: Any, batches: Any, subnet: SubnetConfig | None, *,
                    label_smoothing: float, n: int, device: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sentence label-smoothed loss, NLL and token counts ([n] each, corpus order) of
    `subnet` of a supernet (or of a plain model with ``subnet=None``), in eval mode.

    `batches` are `automoe.data.Batch`es of the first n dev sentences (``ids`` gives each
    row's sentence). The per-token terms are the training loss's own
    (`supernet.training.loss.token_losses`: one log-softmax per batch).
    """
    import torch

    from supernet.tokens import PAD_ID
    from supernet.training.evaluate import forward
    from supernet.training.loss import token_losses

    loss, nll, tokens = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                logits, _ = forward(model, batch.src, batch.prev, subnet)
                ls, nl = token_losses(logits, batch.target, epsilon=label_smoothing)  # [B, T]
                rows = batch.ids.cpu().numpy()
                loss[rows] = ls.sum(1).double().cpu().numpy()
                nll[rows] = nl.sum(1).double().cpu().numpy()
                tokens[rows] = batch.target.ne(PAD_ID).sum(1).cpu().numpy()
    finally:
        model.train(was_training)
    return loss, nll, tokens


class DevScorer:
    """Scores any model (a supernet's subnet or a standalone Transformer) on the fixed dev
    set under one protocol: per-token dev loss and NLL with their standard errors over
    sentences, and (when ``settings.bleu``) BLEU/chrF of its translations with sacreBLEU's
    95% bootstrap interval (``settings.n_bootstrap`` resamples). `split` names the data
    split scored ("valid"; "test" for a final evaluation)."""

    def __init__(self, data: str | Path, settings: ScoringSettings, *,
                 label_smoothing: float, split: str = "valid") -> None:
        import torch

        from automoe.data import TokenBatcher, Tokenizer, load_split
        from automoe.data.store import Ragged

        s = settings
        self.settings, self.label_smoothing = s, label_smoothing
        self.device = torch.device(s.device)
        rows = load_split(data, split)
        if s.task is not None:
            rows = rows.select_task(s.task)
        n = len(rows) if s.dev_sentences == 0 else min(s.dev_sentences, len(rows))
        head = int(rows.src.offsets[n]), int(rows.tgt.offsets[n])
        src = Ragged(np.asarray(rows.src.flat[:head[0]]), np.asarray(rows.src.offsets[:n + 1]))
        tgt = Ragged(np.asarray(rows.tgt.flat[:head[1]]), np.asarray(rows.tgt.offsets[:n + 1]))
        tasks = None if rows.tasks is None else rows.tasks[:n]
        # Fixed batches in a fixed order: the loss is a deterministic function of the model.
        self.batches = [b.to(self.device) for b in TokenBatcher(
            src, tgt, max_tokens=s.max_tokens, shuffle=False, tasks=tasks)]
        self.n, self.src = n, src
        self.refs = rows.references()[:n] if s.bleu else []
        self.tokenizer = Tokenizer.load(data) if s.bleu else None

    def losses(self, model: Any, subnet: SubnetConfig | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sentence loss, NLL and token counts ([N] each) of `model` (a supernet with
        `subnet`, or a plain model with ``subnet=None``): one teacher-forced pass."""
        return sentence_losses(model, self.batches, subnet, label_smoothing=self.label_smoothing,
                               n=self.n, device=self.device)

    def translations(self, model: Any, subnet: SubnetConfig | None = None) -> list[str]:
        """Detokenised translations of the dev sources (corpus order)."""
        from automoe.decoding import translate_ids

        s = self.settings
        if self.tokenizer is None:
            raise ValueError("this DevScorer does not score BLEU (settings.bleu is False)")
        view = model.bind(subnet) if subnet is not None else model
        ids = translate_ids(view, self.src, beam=s.beam, lenpen=s.lenpen,
                            max_tokens=s.max_tokens, max_len_a=s.max_len_a,
                            max_len_b=s.max_len_b, device=self.device)
        return [self.tokenizer.decode(h) for h in ids]

    def sentences(self, model: Any, subnet: SubnetConfig | None = None) -> SentenceScores:
        """Per-sentence losses (and translations when BLEU is scored) of `model`."""
        loss, nll, tokens = self.losses(model, subnet)
        hyps = self.translations(model, subnet) if self.settings.bleu else []
        return SentenceScores(loss, nll, tokens, hyps)

    def metrics(self, sentences: SentenceScores) -> dict[str, float]:
        """``loss``, ``loss_se``, ``nll``, ``nll_se`` and, with translations, ``bleu``,
        ``bleu_lo``, ``bleu_hi``, ``chrf``, ``chrf_lo``, ``chrf_hi``."""
        from automoe.bleu import corpus_scores
        from automoe.stats import loss_with_se

        loss, loss_se = loss_with_se(sentences.loss, sentences.tokens)
        nll, nll_se = loss_with_se(sentences.nll, sentences.tokens)
        out = {"loss": loss, "loss_se": loss_se, "nll": nll, "nll_se": nll_se}
        if sentences.hyps:
            scores = corpus_scores(sentences.hyps, self.refs,
                                   n_bootstrap=self.settings.n_bootstrap)
            out.update({k: scores[k] for k in ("bleu", "chrf") if k in scores})
            out.update({k: scores[k] for k in ("bleu_lo", "bleu_hi", "chrf_lo", "chrf_hi")
                        if k in scores})
        return out

    def score(self, model: Any, subnet: SubnetConfig | None = None) -> dict[str, float]:
        """`metrics` of `sentences`."""
        return self.metrics(self.sentences(model, subnet))


class CandidateScorer:
    """Holds the supernet (built once from the shared state) and the dev set."""

    def __init__(self, recipe: CandidateScorerFactory, state: dict[str, np.ndarray]) -> None:
        import torch

        s = recipe.settings
        self.settings, self.recipe = s, recipe
        self.device = torch.device(s.device)
        checkpoint = recipe.checkpoint
        self.model = checkpoint.with_weights(state).build_model(self.device)
        self.dev = DevScorer(recipe.data, s, label_smoothing=checkpoint.label_smoothing)
        self.tag = None
        if s.task is not None:
            from automoe.data import Tokenizer

            self.tag = Tokenizer.load(recipe.data).task_id(s.task)
        # metric name -> protocol, e.g. {"latency": torch's, "latency_ort": ONNX Runtime's}
        self.latency_protocols = {latency_metric(rt).name: s.latency_protocol(
            checkpoint.vocab_size, recipe.weights, rt) for rt in s.latency_runtimes}
        self.latency_cache = None
        if recipe.latency_cache is not None:
            from automoe.costs.latency_cache import LatencyCache

            self.latency_cache = LatencyCache(recipe.latency_cache)

    def score(self, config: SubnetConfig) -> Score:
        return Score(self.dev.score(self.model, config))

    def latency(self, config: SubnetConfig) -> Score:
        """The latency of ``config``'s extracted model in each of the settings' runtimes:
        per metric NAME (``latency``, ``latency_ort``) the columns NAME_ms (median),
        NAME_mean_ms, NAME_std_ms, NAME_p10_ms, NAME_p90_ms, NAME_hat_ms and the infos
        NAME_device, NAME_protocol, NAME_cached."""
        from automoe.costs.latency import measure_latency

        def build() -> Transformer:  # the static model export would ship
            model = self.model.extract(config).eval()
            if self.tag is not None and config.task_routed:
                from supernet.task_extract import for_task

                model = for_task(model, self.tag)
            return model

        key = config.key()
        if self.tag is not None and config.task_routed:  # what is measured: the served model
            from supernet.task_extract import served_config

            key = served_config(self.model, config, self.tag).key()
        metrics: dict[str, float] = {}
        info: dict[str, str] = {}
        for name, protocol in self.latency_protocols.items():
            cached = False
            if self.latency_cache is not None:
                result, cached = self.latency_cache.measure(key, protocol, build)
            else:
                result = measure_latency(build(), protocol, subnet_key=key)
            stats = result.stats
            fp = result.fingerprint
            runtime = f" / onnxruntime {fp['onnxruntime']}" if "onnxruntime" in fp else ""
            metrics.update({f"{name}_ms": stats["median"], f"{name}_mean_ms": stats["mean"],
                            f"{name}_std_ms": stats["std"], f"{name}_p10_ms": stats["p10"],
                            f"{name}_p90_ms": stats["p90"], f"{name}_hat_ms": result.hat_ms})
            info.update({f"{name}_device": f"{fp.get('device_name', '?')} / "
                                           f"{fp.get('threads')} threads / {fp.get('dtype')}"
                                           f"{runtime} [{result.fingerprint_id}]",
                         f"{name}_protocol": result.protocol_key,
                         f"{name}_cached": str(cached)})
        return Score(metrics, info)
