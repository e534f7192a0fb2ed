"""Supernet fidelity: does the supernet tell apart subnets of the *same* cost as training
them alone would, and better than counting parameters?

Spreading subnets over a wide FLOPs range makes any study pass: FLOPs alone then ranks
them. `run_fidelity(FidelitySettings)` compares subnets inside FLOPs *bands* instead, in
five resumable steps, all in one directory DIR:

1. **choose** (`choose_banded`): ``bands`` FLOPs bands, centred at quantiles of a large
   random pool's log FLOPs, each holding the pool members within ``band_width`` (±5%) of
   its centre; from each band ``dense_per_band`` dense and the rest MoE subnets, picked
   greedily to differ in as many architecture traits as possible (depths, widths, expert
   counts and sizes, top-k). Written to ``DIR/search.json`` and ``DIR/candidates.csv``.
2. **inherited**: each subnet scored with the supernet's weights by the search's own
   `DevScorer` (dev loss with its SE, BLEU/chrF with 95% intervals), timing the loss pass
   and the decoding (CPU seconds per subnet of each objective), and the routing the
   supernet's routers choose on the dev set (observed FLOPs). ``DIR/inherited/``.
3. **standalone**: every subnet trained from scratch with ``seeds`` training seeds, and
   ``double`` of them (whole bands, from the middle one out) once more with twice the
   updates, as Ray Tune trials of `automoe retrain`: one job per (seed, budget) in
   ``DIR/jobs/<job>/``. Each trained model is scored exactly as in step 2
   (``DIR/standalone/<job>/``).
4. per-sentence scores of every scored model in ``DIR/sentences/`` (`automoe.sentences`),
   so that every number of the report can be recomputed.
5. **report** (`automoe.fidelity_report.agreement_report`): ``DIR/fidelity.csv`` (one row per subnet, standalone
   scores averaged over seeds), ``DIR/standalone.csv`` (one row per key, seed and budget),
   ``DIR/fidelity.json`` and ``DIR/fidelity.png``.

Every predictor is oriented so that a higher value predicts a better subnet (lower loss,
higher BLEU): -inherited loss, inherited BLEU, and FLOPs / params (more compute, better
model); a positive tau means "ranks the right way". Within-band figures pool the subnet
pairs inside each band (FLOPs is then nearly constant and cannot rank them); the seed
ceiling is the within-band tau between two training seeds of the same subnets, the best
any predictor can expect to reach. A resumed study (`resume=True`) checks that the supernet
(its sha256), the data and every setting are the recorded ones and redoes nothing finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automoe.checkpoints import read_supernet
from automoe.costs.flops import RoutingCounts
from automoe.costs.flops import flops as count_flops
from automoe.data import read_meta
from automoe.dev_scoring import DevScorer, ScoringSettings, SentenceScores
from automoe.devices import torch_threads
from automoe.fidelity_report import (
    FIDELITY_COLUMNS,
    STANDALONE_COLUMNS,
    agreement_report,
    plot_study,
)
from automoe.io_utils import atomic_write_csv, atomic_write_json, read_json
from automoe.run_dir import CANDIDATES, META, RunDir
from automoe.search.results import experts_summary
from automoe.search.settings import SearchSettings
from automoe.sentences import save_sentence_scores
from automoe.training.retrain import RetrainSettings, retrain
from automoe.training.retrain.job import RETRAIN_DIR, SETTINGS_FILE, TABLE
from search_spaces import SubnetConfig
from search_spaces.checks import check_ints
from supernet import Transformer
from supernet.params import count_params
from supernet.training.evaluate import forward

if TYPE_CHECKING:
    from automoe.dev_scoring import DevScorer
    from search_spaces.config import SubnetConfig
    from search_spaces.space import SearchSpace

__all__ = ["FidelitySettings", "FidelityOutcome", "Chosen", "choose_banded", "run_fidelity",
           "scored", "traits", "double_budget_keys", "plan_jobs"]

FORMAT = "automoe.fidelity/2"
@dataclass(frozen=True)
class FidelitySettings:
    """What a fidelity study does (stored in ``DIR/search.json``).

    Attributes:
        supernet: supernet run dir (or checkpoint file).
        data: prepared data dir (its valid split scores, its train split trains).
        out: the study's directory.
        bands: FLOPs bands.
        per_band: subnets per band.
        dense_per_band: dense subnets per band (the rest are MoE).
        band_width: a band holds the subnets within this relative distance of its centre.
        seeds: standalone training seeds per subnet.
        double: subnets also trained with twice the updates (the budget check).
        seed: the choice of subnets.
        pool: random subnets drawn to find the bands' members.
        dev_sentences: dev sentences scored (the first N of the valid split; 0 = all).
        beam: beam for dev BLEU (1 = greedy, the search's default).
        n_bootstrap: bootstrap resamples of the BLEU/chrF intervals.
        threads: torch threads while scoring (the search scores with 1 per worker).
        retrain: `automoe.training.retrain.RetrainSettings` fields for the standalone training
            (preset, overrides, test_sentences, cpus_per_trial, concurrent, ...).
        supernet_moe: few-shot: MoE subnets take their inherited scores from this supernet
            (trained on MoE subnets only), dense ones from `supernet` (trained on dense
            ones); None: one supernet for all.
        standalone_from: a finished study of the same subnets, data and standalone
            settings whose standalone results (and per-sentence scores) are reused instead
            of training: how supernet variants are compared on one set of trained models.
        progress: progress bars.
    """

    supernet: str
    data: str
    out: str
    bands: int = 3
    per_band: int = 6
    dense_per_band: int = 2
    band_width: float = 0.05
    seeds: int = 2
    double: int = 6
    seed: int = 0
    pool: int = 4000
    dev_sentences: int = 0
    beam: int = 1
    n_bootstrap: int = 1000
    threads: int = 1
    retrain: Mapping[str, Any] = field(default_factory=dict)
    standalone_from: str | None = None
    supernet_moe: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "retrain", dict(self.retrain))
        check_ints("fidelity settings", self, {
            "bands": 1, "per_band": 2, "dense_per_band": 1, "seeds": 1, "double": 0,
            "pool": 10, "dev_sentences": 0, "beam": 1, "n_bootstrap": 0, "threads": 1})
        if self.dense_per_band >= self.per_band:
            raise ValueError(f"fidelity: --dense-per-band {self.dense_per_band} leaves no MoE "
                             f"subnet in a band of {self.per_band}")
        if self.double > self.bands * self.per_band:
            raise ValueError(f"fidelity: --double {self.double} exceeds the "
                             f"{self.bands * self.per_band} subnets of the study")
        if not 0 < self.band_width < 0.5:
            raise ValueError(f"fidelity: --band-width {self.band_width!r}: expected a "
                             "relative width in (0, 0.5)")
        bad = sorted(set(self.retrain) & {"run_dir", "keys", "top", "progress"})
        if bad:
            raise ValueError(f"fidelity: retrain settings {bad} are set by the study itself")
        if "seed" in dict(self.retrain.get("overrides") or {}):
            raise ValueError("fidelity: the training seed is set by the study (--seeds)")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "retrain": dict(self.retrain)}


@dataclass(frozen=True)
class FidelityOutcome:
    """The study's tables and where they are."""

    table: pd.DataFrame
    standalone: pd.DataFrame
    report: dict[str, Any]
    out: Path


# ---- 1. choosing the subnets ---------------------------------------------------------------


@dataclass(frozen=True)
class Chosen:
    """One subnet of the study: its FLOPs band (0 = cheapest), role ("dense", "moe")."""

    band: int
    role: str
    config: SubnetConfig


def traits(config: SubnetConfig) -> tuple[Any, ...]:
    """What makes two subnets of equal FLOPs different architectures: depths, widths,
    hidden sizes, expert counts and sizes, top-k, per side."""
    out: list[Any] = [config.encoder_embed_dim, config.decoder_embed_dim]
    for side in config.sides():
        dims = side.expert_dims
        out += [side.layers, side.experts, tuple(sorted({h for d in dims for h in d})),
                max(side.top_k), sum(max(d) for d in dims)]
    return tuple(out)


def _diverse(members: list[SubnetConfig], k: int, rng: random.Random) -> list[SubnetConfig]:
    """k members picked greedily to maximise the smallest number of `traits` in which a new
    pick differs from those already picked (ties at random; the first pick at random)."""
    order = list(members)
    rng.shuffle(order)
    picked = [order.pop()]
    while len(picked) < k and order:
        def distance(c: SubnetConfig) -> int:
            t = traits(c)
            return min(sum(a != b for a, b in zip(t, traits(p), strict=True)) for p in picked)

        best = max(range(len(order)), key=lambda i: distance(order[i]))  # first max: random
        picked.append(order.pop(best))
    return picked


def choose_banded(space: SearchSpace, *, bands: int, per_band: int, dense_per_band: int,
                  band_width: float, seed: int, pool: int) -> list[Chosen]:
    """`bands` x `per_band` distinct subnets, band by band (cheapest first), dense ones first
    in each band. Band centres: the quantiles (i + 1) / (bands + 1) of the log FLOPs of
    `pool` random subnets (half drawn dense); a band's members lie within ``band_width`` of
    its centre (relative FLOPs under uniform routing). ValueError when bands overlap or one
    holds too few dense or MoE subnets."""

    rng = random.Random(seed)
    draws: dict[str, SubnetConfig] = {}
    for i in range(pool):
        c = space.sample_dense(rng) if i % 2 else space.sample(rng)
        draws.setdefault(c.key(), c)
    configs = list(draws.values())
    flops = np.array([count_flops(c).flops for c in configs])
    centres = np.exp(np.quantile(np.log(flops), [(i + 1) / (bands + 1) for i in range(bands)]))
    if bands > 1 and np.min(centres[1:] / centres[:-1]) <= (1 + band_width) / (1 - band_width):
        raise ValueError(f"space {space.name!r}: {bands} bands of ±{band_width:.0%} overlap "
                         "(too narrow a FLOPs range); use fewer bands or narrower ones")
    out: list[Chosen] = []
    for band, centre in enumerate(centres):
        inside = [c for c, f in zip(configs, flops, strict=True)
                  if abs(f / centre - 1) <= band_width]
        for role, want in (("dense", dense_per_band), ("moe", per_band - dense_per_band)):
            members = [c for c in inside if c.is_dense == (role == "dense")]
            if len(members) < want:
                raise ValueError(f"space {space.name!r}: band {band} ({centre / 1e9:.4g} "
                                 f"GFLOPs ±{band_width:.0%}) holds {len(members)} {role} "
                                 f"subnets in a pool of {pool}, {want} asked; raise --pool")
            out += [Chosen(band, role, c) for c in _diverse(members, want, rng)]
    return out


def double_budget_keys(chosen: Sequence[Chosen], count: int) -> list[str]:
    """The `count` subnets also trained with twice the budget: whole bands from the middle
    one outwards (so the within-band tau across budgets counts as many pairs as possible),
    in choice order."""
    bands = sorted({c.band for c in chosen})
    middle = (len(bands) - 1) / 2
    order = sorted(bands, key=lambda b: (abs(b - middle), b))
    keys = [c.config.key() for b in order for c in chosen if c.band == b]
    return keys[:count]


# ---- 2.-4. scoring ---------------------------------------------------------------------------


def _dev_scorer(settings: FidelitySettings, label_smoothing: float) -> DevScorer:

    return DevScorer(settings.data, ScoringSettings(
        dev_sentences=settings.dev_sentences, bleu=True, beam=settings.beam,
        n_bootstrap=settings.n_bootstrap, threads=settings.threads),
        label_smoothing=label_smoothing)


def observed_routing(model: Any, dev: DevScorer, subnet: SubnetConfig | None) -> Any:
    """The routing counts (`automoe.costs.flops.RoutingCounts`) of `model` (with `subnet`)
    summed over the dev batches' target-side and source-side tokens (padding included)."""
    import torch


    enc: list[np.ndarray] = []
    dec: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in dev.batches:
                _, aux = forward(model, batch.src, batch.prev, subnet)
                e, d = aux.routing_counts()
                enc = [a + np.asarray(b) for a, b in zip(enc, e, strict=True)] if enc else \
                    [np.asarray(b) for b in e]
                dec = [a + np.asarray(b) for a, b in zip(dec, d, strict=True)] if dec else \
                    [np.asarray(b) for b in d]
    finally:
        model.train(was_training)
    return RoutingCounts(tuple(tuple(int(v) for v in c) for c in enc),
                         tuple(tuple(int(v) for v in c) for c in dec))


def scored(dev: DevScorer, model: Any, subnet: SubnetConfig | None,
           sentences: Path | None = None) -> dict[str, float]:
    """`DevScorer` metrics, the CPU seconds of the loss pass and of the decoding, and the
    FLOPs under the routing observed on the dev set; the per-sentence scores go to
    `sentences` (`automoe.sentences`) when given."""

    start = time.process_time()
    loss, nll, tokens = dev.losses(model, subnet)
    loss_seconds = time.process_time() - start
    start = time.process_time()
    hyps = dev.translations(model, subnet)
    bleu_seconds = time.process_time() - start
    sent = SentenceScores(loss, nll, tokens, hyps)
    if sentences is not None:
        save_sentence_scores(sentences, sent, dev.refs)
    config = subnet if subnet is not None else model.config
    observed = count_flops(config, routing=observed_routing(model, dev, subnet)).flops
    return {**dev.metrics(sent), "loss_seconds": loss_seconds, "bleu_seconds": bleu_seconds,
            "flops_observed": observed}


def _each(items: Sequence[tuple[str, Any]], folder: Path,
          score: Callable[[str, Any], dict[str, Any]], *, desc: str, progress: bool
          ) -> dict[str, dict[str, Any]]:
    """``score(key, item)`` for every item without a ``folder/<key>.json`` yet (written
    atomically, so an interrupted study resumes where it stopped); all results by key."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, item in tqdm(items, desc=desc, unit="model", disable=not progress):
        path = folder / f"{key}.json"
        if not path.is_file():
            atomic_write_json(path, score(key, item))
        out[key] = read_json(path)
    return out


# ---- the study -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One retrain job of the study: training `seed` index, `budget` (1 or 2 x the base
    updates) and the subnets it trains."""

    name: str
    seed: int
    budget: int
    keys: tuple[str, ...]


def plan_jobs(settings: FidelitySettings, chosen: Sequence[Chosen]) -> list[Job]:
    """One job per training seed at the base budget, then the double-budget job."""
    keys = tuple(c.config.key() for c in chosen)
    jobs = [Job(f"seed{s}", s, 1, keys) for s in range(settings.seeds)]
    if settings.double:
        jobs.append(Job("budget2x", 0, 2, tuple(double_budget_keys(chosen, settings.double))))
    return jobs


def _candidates_table(chosen: Sequence[Chosen], scores: Mapping[str, Mapping[str, float]],
                      vocab_size: int, normalize_before: bool) -> pd.DataFrame:

    rows = []
    for c in chosen:
        config = c.config
        counts = count_params(config, vocab_size, normalize_before=normalize_before)
        report = count_flops(config)
        rows.append({"key": config.key(), "band": c.band, "role": c.role,
                     **scores[config.key()], "flops": report.flops,
                     "flops_min": 2.0 * report.macs_min, "flops_max": 2.0 * report.macs_max,
                     "params": float(counts.hat),
                     "params_active": float(counts.active - counts.embedding),
                     "params_total": float(counts.hat), "is_dense": bool(config.is_dense),
                     "experts": experts_summary(config),
                     "config": json.dumps(config.to_dict(), sort_keys=True,
                                          separators=(",", ":"))})
    return pd.DataFrame(rows)


def _start(settings: FidelitySettings, resume: bool, identity: dict[str, Any]) -> list[Chosen]:
    """The chosen subnets: none yet (a new study) or, resuming, the recorded ones after
    checking that supernet (path and sha256), data and settings are the recorded ones."""

    out = Path(settings.out)
    files = RunDir.at(out)
    meta = files.meta_path
    if resume:
        if not files.has_meta():
            raise ValueError(f"{out}: no fidelity study to resume (no search.json)")
        stored = files.read_meta()
        if stored.get("format") != FORMAT:
            raise ValueError(f"{meta}: format {stored.get('format')!r}, expected {FORMAT!r}")
        recorded = stored.get("supernet") or {}
        # contents, not paths: a study (or its data) may move; the hashes may not change
        changed = [f"{k}: recorded {recorded.get(k)!r}, now {v!r}"
                   for k, v in identity.items()
                   if k not in ("checkpoint", "data") and recorded.get(k) != v]
        # where the study lives may change (a copy on another machine resumes)
        now = {**settings.to_dict(), "progress": None, "out": None}
        was = {**(stored.get("fidelity") or {}), "progress": None, "out": None}
        changed += [f"{k}: recorded {was.get(k)!r}, now {v!r}" for k, v in now.items()
                    if was.get(k) != v]
        if changed:
            raise ValueError(f"{meta}: the study was started with another supernet, data or "
                             f"settings; resume refuses to mix them ({'; '.join(changed)})")
        return [Chosen(int(band), role, SubnetConfig.from_dict(c, source=f"{meta} ({role})"))
                for band, role, c in stored["subnets"]]
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; pass --resume to continue a study "
                         "there or choose another --out")
    return []


def _search_settings(settings: FidelitySettings, identity: Mapping[str, Any], data: Path,
                     where: Path) -> SearchSettings:
    """The settings of a search that scores this study's subnets as it does (dev loss on
    the same sentences, FLOPs), stored in each of its run dirs' search.json."""
    return SearchSettings(supernet=str(identity["checkpoint"]), data=str(data), out=str(where),
                          objectives=("loss", "flops"), algorithm="random", generations=1,
                          population=max(1, settings.bands * settings.per_band), workers=0,
                          dev_sentences=settings.dev_sentences, beam=settings.beam,
                          seed=settings.seed, baselines=False, progress=False)


def _job_dir(out: Path, job: Job, run_meta: Callable[[Path], dict[str, Any]]) -> Path:
    """DIR/jobs/<job>: a run dir `automoe retrain` reads (search.json, candidates.csv)."""
    run = RunDir.at(out / "jobs" / job.name)
    if not run.has_meta():
        run.write_meta(run_meta(run.path))
    if not run.has_candidates():
        run.write_table(CANDIDATES, RunDir.at(out).read_candidates())
    return run.path


def _train(settings: FidelitySettings, job: Job, run: Path, base: Any) -> pd.DataFrame:
    """Runs (or resumes) one retrain job; its table, every trial finished."""

    overrides = {**dict(settings.retrain.get("overrides") or {}), "seed": base.seed + job.seed}
    if job.budget != 1:
        overrides["max_updates"] = base.max_updates * job.budget
    fields = {**settings.retrain, "overrides": overrides}
    table = run / TABLE
    done = table.is_file() and (pd.read_csv(table)["status"] == "finished").all()
    if not done:
        retrain(RetrainSettings(run_dir=str(run), keys=job.keys, progress=settings.progress,
                                **fields),
                resume=(run / RETRAIN_DIR / SETTINGS_FILE).is_file())
    trained = pd.read_csv(table, dtype={"key": str}).set_index("key")
    unfinished = [k for k in job.keys if k not in trained.index
                  or trained.at[k, "status"] != "finished"]
    if unfinished:
        raise ValueError(f"{table}: trials {unfinished} did not finish "
                         f"({', '.join(str(trained.at[k, 'status']) if k in trained.index else 'absent' for k in unfinished)}); "
                         "resume the study with --resume")
    return trained


def _borrowed(settings: FidelitySettings, keys: Sequence[str], identity: Mapping[str, Any],
              out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The standalone table and training protocol of the finished study
    ``settings.standalone_from``, after checking that it trained the same subnets on the
    same data with the same settings; its per-sentence scores are copied into ``out``."""
    import shutil

    other = Path(str(settings.standalone_from))
    meta = RunDir.at(other).meta_path
    for name in (META, "standalone.csv", "fidelity.json"):
        if not (other / name).is_file():
            raise ValueError(f"--standalone-from {other}: not a finished fidelity study (no "
                             f"{name})")
    stored = RunDir.at(other).read_meta()
    theirs = [c[2] for c in stored.get("subnets", [])]

    their_keys = [SubnetConfig.from_dict(c, source=str(meta)).key() for c in theirs]
    problems = []
    if their_keys != list(keys):
        problems.append("other subnets")
    for k in ("data_hash",):
        if (stored.get("supernet") or {}).get(k) != identity[k]:
            problems.append(f"{k} {(stored.get('supernet') or {}).get(k)!r}")
    was = stored.get("fidelity") or {}
    for k in ("seeds", "double", "retrain"):
        if was.get(k) != settings.to_dict()[k]:
            problems.append(f"{k} {was.get(k)!r} (here {settings.to_dict()[k]!r})")
    if problems:
        raise ValueError(f"--standalone-from {other}: that study differs from this one "
                         f"({'; '.join(problems)}); its trained models cannot stand in")
    table = pd.read_csv(other / "standalone.csv", dtype={"key": str})
    for job in sorted(set(table["job"])):
        source, target = other / "sentences" / job, out / "sentences" / job
        if not target.is_dir():
            shutil.copytree(source, target)
    protocol = read_json(other / "fidelity.json").get("protocol", {})
    return table, {"standalone": protocol.get("standalone"),
                   "standalone_from": str(other.resolve())}


def _supernet(settings: FidelitySettings, resume: bool, read: Callable[[str], Any]
              ) -> tuple[Any, dict[str, Any]]:
    """(checkpoint or None, its identity). The supernet is needed until every chosen subnet
    has its inherited scores and ``candidates.csv`` is written; a resumed study past that
    point runs without it (on another machine, say, with only the study's small files) and
    takes the recorded identity. A supernet that is there is always checked."""
    out = Path(settings.out)
    files = RunDir.at(out)
    stored = files.read_meta() if resume and files.has_meta() else None
    keys = ["checkpoint", "sha256", "vocab_size", "label_smoothing"]
    if settings.supernet_moe:
        keys += ["checkpoint_moe", "sha256_moe"]
    try:
        checkpoint = read(settings.supernet)
        moe = read(settings.supernet_moe) if settings.supernet_moe else None
    except (FileNotFoundError, ValueError):
        done = stored is not None and files.has_candidates() and all(
            (out / "inherited" / f"{_key(c[2])}.json").is_file()
            for c in stored.get("subnets", []))
        if not done:
            raise
        assert stored is not None  # (done implies it)
        recorded = dict(stored.get("supernet") or {})
        return None, {k: recorded.get(k) for k in keys}
    identity = {"checkpoint": str(checkpoint.file.resolve()), "sha256": checkpoint.sha256,
                "vocab_size": checkpoint.vocab_size,
                "label_smoothing": checkpoint.label_smoothing}
    if moe is not None:
        if moe.space.to_dict() != checkpoint.space.to_dict() or \
                moe.vocab_size != checkpoint.vocab_size:
            raise ValueError(f"{moe.file}: --supernet-moe must be a supernet of the same space "
                             f"and vocabulary as {checkpoint.file}")
        identity.update(checkpoint_moe=str(moe.file.resolve()), sha256_moe=moe.sha256)
        checkpoint = _FewShot(checkpoint, moe)
    return checkpoint, identity


@dataclass(frozen=True)
class _FewShot:
    """Two sub-supernets of one space (few-shot NAS): dense subnets score with `dense`, MoE
    subnets with `moe`. Reads like a `SupernetCheckpoint` where the study needs one."""

    dense: Any
    moe: Any

    def __getattr__(self, name: str) -> Any:  # space, vocab_size, options, file, ...
        return getattr(self.dense, name)


def _key(config: Mapping[str, Any]) -> str:

    return SubnetConfig.from_dict(dict(config), source="search.json").key()


def run_fidelity(settings: FidelitySettings, *, resume: bool = False) -> FidelityOutcome:
    """Runs (or resumes) the study; see the module docstring."""

    out = Path(settings.out)
    data = Path(settings.data).resolve()
    meta = read_meta(data)  # a bad data dir fails before anything is written
    base = RetrainSettings(run_dir=str(out), keys=("probe",), progress=False,
                           **settings.retrain).options()  # bad training options fail now
    checkpoint, identity = _supernet(settings, resume, read_supernet)
    identity = {**identity, "data": str(data), "data_hash": meta.get("input_hash")}
    if int(meta["vocab_size"]) != identity["vocab_size"]:
        raise ValueError(f"{data}: vocabulary {meta['vocab_size']} differs from the supernet's "
                         f"{identity['vocab_size']} (trained on other data?)")
    def run_meta(where: Path) -> dict[str, Any]:
        """What a run dir's search.json says (`automoe retrain` and `automoe plot` read
        it): the settings of a search that scored the same subnets as this study does."""
        return {"settings": _search_settings(settings, identity, data, where).to_json(),
                "supernet": identity, "data": str(data)}
    chosen = _start(settings, resume, identity)
    if not chosen:
        chosen = choose_banded(checkpoint.space, bands=settings.bands,
                               per_band=settings.per_band,
                               dense_per_band=settings.dense_per_band,
                               band_width=settings.band_width, seed=settings.seed,
                               pool=settings.pool)
        RunDir.at(out).write_meta({
            "format": FORMAT, "fidelity": settings.to_dict(), **run_meta(out),
            "subnets": [[c.band, c.role, c.config.to_dict()] for c in chosen]})
    keys = [c.config.key() for c in chosen]
    configs = {c.config.key(): c.config for c in chosen}
    with torch_threads(settings.threads):  # 2. inherited scores
        models: dict[bool, Any] = {}  # is_dense -> the supernet that scores it
        if not all((out / "inherited" / f"{k}.json").is_file() for k in keys):
            parts = ((True, checkpoint.dense), (False, checkpoint.moe)) \
                if isinstance(checkpoint, _FewShot) else ((True, checkpoint), (False, checkpoint))
            built: dict[int, Any] = {}
            for dense, part in parts:
                if id(part) not in built:
                    built[id(part)] = part.build_model()
                models[dense] = built[id(part)]
        dev = _dev_scorer(settings, identity["label_smoothing"])
        inherited = _each([(k, configs[k]) for k in keys], out / "inherited",
                          lambda key, config: scored(dev, models[bool(config.is_dense)], config,
                                                     out / "sentences" / "inherited" / key),
                          desc="inherited", progress=settings.progress)
        models.clear()  # the supernets are not needed past this point
        if not RunDir.at(out).has_candidates():
            normalize_before = bool(checkpoint.options.get("normalize_before", False))
            RunDir.at(out).write_table(CANDIDATES, _candidates_table(
                chosen, inherited, checkpoint.vocab_size, normalize_before))

    # 3. standalone training (Ray Tune), one job per seed and budget, then scoring; or the
    # results of a study that trained the same subnets
    if settings.standalone_from:
        standalone, borrowed = _borrowed(settings, keys, identity, out)
    else:
        standalone, borrowed = _standalone(settings, chosen, out, run_meta, base, dev), {}

    # 5. report
    frame = _fidelity_table(keys, out, inherited, standalone)
    report = {"format": FORMAT, **agreement_report(frame, standalone)}
    dev_text = f"first {settings.dev_sentences}" if settings.dev_sentences else "all"
    report["protocol"] = {
        "dev": f"{dev_text} sentences of the valid split of {data}, beam {settings.beam}, "
               f"sacreBLEU 95% bootstrap ({settings.n_bootstrap} resamples); loss: "
               "label-smoothed CE per token, SE over sentences",
        "bands": f"{settings.bands} bands of ±{settings.band_width:.0%} around quantiles of "
                 f"the log FLOPs of {settings.pool} random subnets; {settings.per_band} per band "
                 f"({settings.dense_per_band} dense)",
        "standalone": borrowed.get("standalone") or {**settings.retrain,
                                                      "options": base.to_dict()},
        **({"standalone_from": borrowed["standalone_from"]} if borrowed else {}),
        "seeds": settings.seeds, "base_updates": base.max_updates,
        "seconds": f"process CPU seconds per subnet, {settings.threads} torch thread(s)",
        "flops_observed": "FLOPs under the routing of the supernet's routers on the dev "
                          "batches (padding tokens included)"}
    report["supernet"] = identity
    atomic_write_csv(frame, out / "fidelity.csv")
    atomic_write_csv(standalone[[c for c in STANDALONE_COLUMNS]], out / "standalone.csv")
    atomic_write_json(out / "fidelity.json", report)
    plot_study(frame, report, out / "fidelity.png")
    return FidelityOutcome(frame, standalone, report, out)


def _standalone(settings: FidelitySettings, chosen: Sequence[Chosen], out: Path,
                run_meta: Callable[[Path], dict[str, Any]], base: Any, dev: DevScorer
                ) -> pd.DataFrame:
    """Trains (or resumes) every job of `plan_jobs` and scores its models: the rows of
    ``standalone.csv``."""


    rows = []
    band_of = {c.config.key(): c.band for c in chosen}
    dense_of = {c.config.key(): bool(c.config.is_dense) for c in chosen}
    for job in plan_jobs(settings, chosen):
        folder = out / "standalone" / job.name
        missing = [k for k in job.keys if not (folder / f"{k}.json").is_file()]
        trained = None
        if missing:  # a job whose models are all scored needs neither training nor weights
            job_to_run = dataclasses.replace(job, keys=tuple(missing))
            trained = _train(settings, job_to_run, _job_dir(out, job, run_meta), base)
        with torch_threads(settings.threads):
            def score(key: str, row: Any, job: Job = job) -> dict[str, Any]:
                return {**scored(dev, Transformer.load(row["model_dir"]).eval(), None,
                                 out / "sentences" / job.name / key),
                        "updates": int(row["updates"]), "test_bleu": row["bleu_retrained"],
                        "test_chrf": row["chrf_retrained"]}

            scores = _each([(k, None if trained is None or k not in trained.index
                             else trained.loc[k]) for k in job.keys], folder, score,
                           desc=f"standalone {job.name}", progress=settings.progress)
        for k in job.keys:
            s = scores[k]
            rows.append({"key": k, "band": band_of[k], "is_dense": dense_of[k], "job": job.name,
                         "seed": job.seed, "budget": job.budget,
                         "updates": int(s["updates"]),
                         "standalone_loss": s["loss"], "standalone_loss_se": s["loss_se"],
                         "standalone_bleu": s.get("bleu", math.nan),
                         "standalone_bleu_lo": s.get("bleu_lo", math.nan),
                         "standalone_bleu_hi": s.get("bleu_hi", math.nan),
                         "standalone_chrf": s.get("chrf", math.nan),
                         "test_bleu": s["test_bleu"], "test_chrf": s["test_chrf"]})
    return pd.DataFrame(rows)


def _fidelity_table(keys: Sequence[str], out: Path, inherited: Mapping[str, Mapping[str, Any]],
                    standalone: pd.DataFrame) -> pd.DataFrame:
    """One row per subnet: its choice and costs (candidates.csv), inherited scores, and the
    standalone scores at the base budget averaged over seeds (with their sd)."""
    cands = RunDir.at(out).read_candidates().set_index("key")
    base = standalone[standalone["budget"] == 1].groupby("key")
    rows = []
    for key in keys:
        inh = inherited[key]
        mine = base.get_group(key)
        row = {"key": key, **{c: cands.at[key, c] for c in
                              ("band", "role", "is_dense", "flops", "flops_min", "flops_max",
                               "params_active", "params_total", "experts", "config")},
               "flops_observed": inh["flops_observed"],
               "loss_seconds": inh["loss_seconds"], "bleu_seconds": inh["bleu_seconds"],
               "standalone_seeds": int(len(mine))}
        for m in ("loss", "loss_se", "bleu", "bleu_lo", "bleu_hi", "chrf"):
            row[f"inherited_{m}"] = inh.get(m, math.nan)
        for m in ("loss", "bleu", "chrf"):
            values = mine[f"standalone_{m}"].to_numpy(float)
            row[f"standalone_{m}"] = float(values.mean())
            if m != "chrf":
                row[f"standalone_{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 \
                    else math.nan
        rows.append(row)
    return pd.DataFrame(rows)[list(FIDELITY_COLUMNS)]
