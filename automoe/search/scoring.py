"""Scoring one subnet of a trained supernet for a search: its cheap costs (FLOPs, params,
bytes, predicted latency) and its candidate scorer (dev loss, BLEU, measured latency).

Pieces, in the order a search uses them:

- the supernet checkpoint is read by `automoe.checkpoints.read_supernet` (a checkpoint that
  does not fit its space fails there) and rebuilt into a model by its `build_model`.
- `CheapCosts` computes the metrics that are pure functions of the config (analytic FLOPs,
  HAT-convention params, predicted latency) in the driver, and checks constraints on them
  against the space's smallest subnet before any scoring starts.
- `CandidateScorerFactory` is what the evaluators ship to each worker: called with the
  shared numpy state dict, it builds a `CandidateScorer` holding the supernet once
  (`SupernetCheckpoint.build_model`).
- `CandidateScorer.score(config)`: the dev scorer (`automoe.dev_scoring.DevScorer`, under
  the run's `ScoringSettings`) on the supernet's inherited weights in eval mode (no
  dropout), so scores are deterministic.
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

from automoe.costs.flops import FlopsProtocol
from automoe.costs.latency import measure_latency
from automoe.costs.latency_cache import LatencyCache
from automoe.costs.predictor import LatencyPredictor
from automoe.data import Tokenizer, load_split, read_meta
from automoe.dev_scoring import DevScorer, ScoringSettings
from automoe.io_utils import file_sha256
from automoe.metrics import cheap_metrics
from automoe.search.evaluators import Score
from automoe.search.objectives import latency_metric
from supernet.task_extract import for_task, served_config

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
    "CandidateScorerFactory",
    "CandidateScorer",
]


def check_data(data_dir: str | Path, vocab_size: int, *, dev_sentences: int,
               bleu: bool = False) -> int:
    """Checks the data dir against the supernet; returns the dev subset's size. With
    `bleu`, reads the dev references here once, so that the warning of an older data dir
    without them (`SplitData.references`) shows in this process, not only in the actors'
    logs."""

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

        return served_config(self.model, config, self.tag)


def task_server(checkpoint: SupernetCheckpoint, data: str | Path,
                task: str | None) -> TaskServer | None:
    """The `TaskServer` of ``task`` (None: no task given); ValueError naming the task and
    the data dir's tasks when it has no such task."""
    if task is None:
        return None

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
        self.task = task
        self.space = checkpoint.space
        self.vocab_size = checkpoint.vocab_size
        self.normalize_before = bool(checkpoint.options.get("normalize_before", False))
        self.flops_protocol = FlopsProtocol()
        self.predictor: LatencyPredictor | None = None
        self.predictor_path: str | None = None
        if predictor:
            self.predictor = LatencyPredictor.load(predictor)
            self.predictor_path = str(predictor)

    def __call__(self, config: SubnetConfig) -> dict[str, float]:
        """Every available cheap metric of the registry (`automoe.metrics`), column ->
        value, of ``config`` or of what serves the task."""
        if self.task is not None:
            config = self.task.served(config)
            if self.predictor is not None and not self.space.contains(config):
                raise ValueError(f"--predictor with --task {self.task.task}: the served config "
                                 f"{config.key()} is outside space {self.space.name!r}, whose "
                                 "features the predictor reads; use measured latency")
        out = {}
        for metric in cheap_metrics():
            assert metric.cost is not None  # (a cheap metric has one)
            value = metric.cost(self, config)
            if value is not None:
                out[metric.column] = value
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
        """The protocols of the cheap metrics (registry name -> text), and ``latency``
        (latency metric name -> protocol text) for the measured ones."""
        out: dict[str, Any] = {}
        for metric in cheap_metrics():
            text = metric.protocol(self) if metric.protocol is not None else None
            if text is not None:
                out[metric.name] = text
        out.update(latency)
        return out

    def space_identity(self) -> dict[str, Any]:
        import json

        blob = json.dumps(self.space.to_dict(), sort_keys=True).encode()
        return {"name": self.space.name, "source": self.space.source,
                "sha256": hashlib.sha256(blob).hexdigest()[:16], "size": str(self.space.size())}


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

            self.tag = Tokenizer.load(recipe.data).task_id(s.task)
        # metric name -> protocol, e.g. {"latency": torch's, "latency_ort": ONNX Runtime's}
        self.latency_protocols = {latency_metric(rt).name: s.latency_protocol(
            checkpoint.vocab_size, recipe.weights, rt) for rt in s.latency_runtimes}
        self.latency_cache = None
        if recipe.latency_cache is not None:

            self.latency_cache = LatencyCache(recipe.latency_cache)

    def score(self, config: SubnetConfig) -> Score:
        return Score(self.dev.score(self.model, config))

    def latency(self, config: SubnetConfig) -> Score:
        """The latency of ``config``'s extracted model in each of the settings' runtimes:
        per metric NAME (``latency``, ``latency_ort``) the columns NAME_ms (median),
        NAME_mean_ms, NAME_std_ms, NAME_p10_ms, NAME_p90_ms, NAME_hat_ms and the infos
        NAME_device, NAME_protocol, NAME_cached."""

        def build() -> Transformer:  # the static model export would ship
            model = self.model.extract(config).eval()
            if self.tag is not None and config.task_routed:

                model = for_task(model, self.tag)
            return model

        key = config.key()
        if self.tag is not None and config.task_routed:  # what is measured: the served model

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
