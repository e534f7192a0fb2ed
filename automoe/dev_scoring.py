"""The dev scorer: any model (a supernet's subnet or a standalone Transformer) scored on a
fixed dev set under one protocol.

- `ScoringSettings`: how a model is scored (dev subset, BLEU or loss only, decoding,
  device and threads) and the latency protocol the search measures under; part of a
  search's identity.
- `DevScorer` scores on the fixed dev set (the first ``dev_sentences`` of the valid split,
  all by default; fixed batches): label-smoothed dev loss and NLL with their standard
  errors over sentences, and BLEU/chrF of its translations (sacreBLEU; greedy or beam) with
  95% bootstrap intervals. It also returns the per-sentence outputs that paired
  significance tests need (`SentenceScores`; archived by `automoe.sentences`).
- `sentence_losses`: the per-sentence teacher-forced loss, NLL and token counts.

The search's candidate scorer (`automoe.search.scoring.CandidateScorer`), the fidelity
study, the reference and task-routing studies and the benchmarks all score through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from automoe.bleu import corpus_scores
from automoe.costs.latency import LatencyProtocol
from automoe.data import Batch, TokenBatcher, Tokenizer, load_split
from automoe.data.store import Ragged
from automoe.decoding import translate_ids
from automoe.stats import loss_with_se
from supernet.tokens import PAD_ID
from supernet.training.evaluate import forward
from supernet.training.loss import token_losses

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig

__all__ = ["ScoringSettings", "DevScorer", "SentenceScores", "sentence_losses"]


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
                         runtime: str = "torch") -> LatencyProtocol:
        """The protocol latency is measured under in ``runtime``; `weights` names the weights
        the model runs with (MoE routing, hence latency, depends on them)."""
        return LatencyProtocol(device=self.device,
                               threads=None if self.device != "cpu" else self.threads,
                               runs=self.latency_runs, warmup=self.latency_warmup,
                               vocab_size=vocab_size, weights=weights, runtime=runtime)


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


def sentence_losses(model: torch.nn.Module, batches: Iterable[Batch], subnet: SubnetConfig | None, *,
                    label_smoothing: float, n: int, device: torch.device
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sentence label-smoothed loss, NLL and token counts ([n] each, corpus order) of
    `subnet` of a supernet (or of a plain model with ``subnet=None``), in eval mode.

    `batches` are `automoe.data.Batch`es of the first n dev sentences (``ids`` gives each
    row's sentence). The per-token terms are the training loss's own
    (`supernet.training.loss.token_losses`: one log-softmax per batch).
    """
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

    def losses(self, model: torch.nn.Module, subnet: SubnetConfig | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sentence loss, NLL and token counts ([N] each) of `model` (a supernet with
        `subnet`, or a plain model with ``subnet=None``): one teacher-forced pass."""
        return sentence_losses(model, self.batches, subnet, label_smoothing=self.label_smoothing,
                               n=self.n, device=self.device)

    def translations(self, model: Any, subnet: SubnetConfig | None = None) -> list[str]:
        """Detokenised translations of the dev sources (corpus order)."""
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
