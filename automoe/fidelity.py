"""Supernet fidelity: does the supernet rank subnets as training them alone would?

`run_fidelity(FidelitySettings)` answers it for one trained supernet, in four resumable
steps, all in one directory DIR:

1. **choose** N subnets (`choose_subnets`): the space's reference subnets (largest,
   largest-dense, ...), `dense` random dense subnets and the rest random MoE subnets, each
   group stratified over FLOPs (equal-width FLOPs bins over a large random pool, one
   subnet per bin). Written to ``DIR/search.json`` (settings, supernet identity) and
   ``DIR/candidates.csv`` (one row per subnet, as a search writes them, so `automoe
   retrain` and `automoe plot` read the directory as they read a search run).
2. **inherited**: each subnet scored with the supernet's weights by the search's own
   `DevScorer` (dev loss with its SE and BLEU/chrF with 95% intervals, whole dev split by
   default), timing the loss pass and the decoding separately (CPU seconds per subnet of
   each objective). One JSON per subnet in ``DIR/inherited/``.
3. **standalone**: every subnet trained from scratch, same data and budget for all, as Ray
   Tune trials of `automoe retrain` (``DIR/retrain/``, ``DIR/retrained.csv`` with test
   BLEU); each trained model is then scored exactly as in step 2 (``DIR/standalone/``).
4. **report**: ``DIR/fidelity.csv`` (one row per subnet, inherited and standalone scores
   side by side), ``DIR/fidelity.json`` (Kendall tau and Spearman rho with 95% bootstrap
   intervals of inherited vs standalone, the same for the trivial proxies FLOPs, active
   and total params, and a paired bootstrap of tau(inherited) - tau(best proxy)), and
   ``DIR/fidelity.png`` (scatter plots with error bars).

Every predictor is oriented so that a higher value predicts a better subnet (lower loss,
higher BLEU): -inherited loss, inherited BLEU, and FLOPs / params (more compute, better
model); a positive tau then means "ranks the right way". A resumed study (`resume=True`)
checks that the supernet and data are the ones recorded and redoes nothing finished.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automoe.io_utils import atomic_path, atomic_write_csv, atomic_write_json
from search_spaces.checks import check_ints

if TYPE_CHECKING:
    from automoe.search.scoring import DevScorer
    from search_spaces.config import SubnetConfig
    from search_spaces.space import SearchSpace

__all__ = ["FidelitySettings", "FidelityOutcome", "choose_subnets", "run_fidelity",
           "agreement_report", "FIDELITY_COLUMNS"]

FORMAT = "automoe.fidelity/1"
FIDELITY_COLUMNS = ("key", "role", "is_dense", "flops", "params_active", "params_total",
                    "inherited_loss", "inherited_loss_se", "standalone_loss",
                    "standalone_loss_se", "inherited_bleu", "inherited_bleu_lo",
                    "inherited_bleu_hi", "standalone_bleu", "standalone_bleu_lo",
                    "standalone_bleu_hi", "inherited_chrf", "standalone_chrf", "test_bleu",
                    "test_chrf", "loss_seconds", "bleu_seconds", "experts", "config")
# predictor name -> (column, sign): sign * column grows with predicted quality
PROXIES = {"flops": ("flops", 1.0), "params_active": ("params_active", 1.0),
           "params_total": ("params_total", 1.0)}
TARGETS = {"loss": ("standalone_loss", -1.0, "inherited_loss"),
           "bleu": ("standalone_bleu", 1.0, "inherited_bleu")}


@dataclass(frozen=True)
class FidelitySettings:
    """What a fidelity study does (stored in ``DIR/search.json``).

    Attributes:
        supernet: supernet run dir (or checkpoint file).
        data: prepared data dir (its valid split scores, its train split trains).
        out: the study's directory.
        subnets: subnets in all, the space's reference subnets included.
        dense: random dense subnets among them (besides the dense references).
        seed: the choice of subnets.
        pool: random subnets drawn per group to stratify over FLOPs.
        dev_sentences: dev sentences scored (the first N of the valid split; 0 = all).
        beam: beam for dev BLEU (1 = greedy, the search's default).
        n_bootstrap: bootstrap resamples of the BLEU/chrF intervals.
        threads: torch threads while scoring (the search scores with 1 per worker).
        retrain: `automoe.training.retrain.RetrainSettings` fields for the standalone training
            (preset, overrides, test_sentences, cpus_per_trial, concurrent, ...).
        progress: progress bars.
    """

    supernet: str
    data: str
    out: str
    subnets: int = 16
    dense: int = 4
    seed: int = 0
    pool: int = 2000
    dev_sentences: int = 0
    beam: int = 1
    n_bootstrap: int = 1000
    threads: int = 1
    retrain: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "retrain", dict(self.retrain))
        check_ints("fidelity settings", self, {
            "subnets": 3, "dense": 0, "pool": 10, "dev_sentences": 0, "beam": 1,
            "n_bootstrap": 0, "threads": 1})
        bad = sorted(set(self.retrain) & {"run_dir", "keys", "top", "progress"})
        if bad:
            raise ValueError(f"fidelity: retrain settings {bad} are set by the study itself")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "retrain": dict(self.retrain)}


@dataclass(frozen=True)
class FidelityOutcome:
    """The study's tables and where they are."""

    table: pd.DataFrame
    report: dict[str, Any]
    out: Path


# ---- 1. choosing the subnets ---------------------------------------------------------------


def _stratified(pool: list[Any], flops: list[float], k: int, rng: random.Random) -> list[Any]:
    """k members of `pool`, one per equal-width FLOPs bin between the pool's extremes (a
    random member of each bin; an empty bin takes the unchosen member nearest its centre)."""
    if k <= 0:
        return []
    lo, hi = min(flops), max(flops)
    width = (hi - lo) / k or 1.0
    bins: list[list[int]] = [[] for _ in range(k)]
    for i, f in enumerate(flops):
        bins[min(k - 1, int((f - lo) / width))].append(i)
    chosen: list[int] = []
    for b, members in enumerate(bins):
        free = [i for i in members if i not in chosen]
        if free:
            chosen.append(rng.choice(free))
            continue
        centre = lo + (b + 0.5) * width
        rest = sorted((abs(flops[i] - centre), i) for i in range(len(pool)) if i not in chosen)
        if rest:
            chosen.append(rest[0][1])
    return [pool[i] for i in chosen]


def choose_subnets(space: SearchSpace, *, subnets: int, dense: int, seed: int,
                   pool: int = 2000) -> list[tuple[str, SubnetConfig]]:
    """(role, config) pairs: the space's references (role = their name), then `dense`
    random dense subnets ("dense") and the rest random MoE subnets ("moe"), each group
    stratified over analytic FLOPs; all distinct. ValueError when `subnets` cannot hold the
    references plus the dense ones plus at least one MoE subnet."""
    from automoe.costs.flops import flops as count_flops

    refs = list(space.dense_baselines().items())
    moe = subnets - len(refs) - dense
    if moe < 1:
        raise ValueError(f"--subnets {subnets} leaves no room for an MoE subnet beside the "
                         f"{len(refs)} reference subnets ({', '.join(n for n, _ in refs)}) "
                         f"and --dense {dense}")
    rng = random.Random(seed)
    seen = {c.key() for _, c in refs}
    out: list[tuple[str, Any]] = list(refs)
    for role, k, draw in (("dense", dense, space.sample_dense), ("moe", moe, space.sample)):
        members: dict[str, Any] = {}
        for _ in range(pool):
            c = draw(rng)
            if (role == "moe") == c.is_dense:  # "moe": at least one layer with experts
                continue
            if c.key() not in seen:
                members.setdefault(c.key(), c)
        configs = list(members.values())
        if len(configs) < k:
            raise ValueError(f"space {space.name!r}: only {len(configs)} distinct {role} "
                             f"subnets in a pool of {pool}, {k} asked")
        picked = _stratified(configs, [count_flops(c).flops for c in configs], k, rng)
        seen.update(c.key() for c in picked)
        out += [(role, c) for c in picked]
    return out


# ---- 2./3. scoring --------------------------------------------------------------------------


def _dev_scorer(settings: FidelitySettings, label_smoothing: float) -> Any:
    from automoe.search.scoring import DevScorer, ScoringSettings

    return DevScorer(settings.data, ScoringSettings(
        dev_sentences=settings.dev_sentences, bleu=True, beam=settings.beam,
        n_bootstrap=settings.n_bootstrap, threads=settings.threads),
        label_smoothing=label_smoothing)


def timed_scores(dev: DevScorer, model: Any, subnet: SubnetConfig | None
                 ) -> dict[str, float]:
    """`DevScorer` metrics plus the CPU seconds of the loss pass and of the decoding."""
    from automoe.search.scoring import SentenceScores

    start = time.process_time()
    loss, nll, tokens = dev.losses(model, subnet)
    loss_seconds = time.process_time() - start
    start = time.process_time()
    hyps = dev.translations(model, subnet)
    bleu_seconds = time.process_time() - start
    return {**dev.metrics(SentenceScores(loss, nll, tokens, hyps)), "loss_seconds": loss_seconds,
            "bleu_seconds": bleu_seconds}


def _each(items: list[tuple[str, Any]], folder: Path, score, *, desc: str, progress: bool
          ) -> dict[str, dict[str, float]]:
    """``score(key, item)`` for every item without a ``folder/<key>.json`` yet (written
    atomically, so an interrupted study resumes where it stopped); all results by key."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, item in tqdm(items, desc=desc, unit="subnet", disable=not progress):
        path = folder / f"{key}.json"
        if not path.is_file():
            atomic_write_json(path, score(key, item))
        out[key] = json.loads(path.read_text(encoding="utf-8"))
    return out


# ---- 4. the report ----------------------------------------------------------------------


def agreement_report(table: pd.DataFrame, *, resamples: int = 2000) -> dict[str, Any]:
    """Rank agreement with the standalone scores, per target ("loss", "bleu"): of the
    inherited scores and of each trivial proxy, each with intervals, plus the paired
    bootstrap of tau(inherited) - tau(best proxy). Columns as `FIDELITY_COLUMNS`."""
    from automoe.stats import rank_agreement, tau_difference

    out: dict[str, Any] = {"n": int(len(table)), "orientation":
                           "every predictor oriented so that higher predicts better (lower "
                           "standalone loss, higher standalone BLEU)"}
    for target, (column, sign, inherited) in TARGETS.items():
        truth = sign * table[column].to_numpy(float)
        predictors = {"inherited": sign * table[inherited].to_numpy(float)}
        predictors.update({name: s * table[col].to_numpy(float)
                           for name, (col, s) in PROXIES.items()})
        entry: dict[str, Any] = {name: rank_agreement(x, truth, resamples=resamples).to_dict()
                 for name, x in predictors.items()}
        best = max(PROXIES, key=lambda n: np.nan_to_num(entry[n]["tau"], nan=-np.inf))
        entry["best_proxy"] = best
        entry["inherited_minus_best_proxy"] = tau_difference(
            predictors["inherited"], predictors[best], truth, resamples=resamples)
        diff = table[inherited].to_numpy(float) - table[column].to_numpy(float)
        entry["inherited_minus_standalone"] = {"mean": float(diff.mean()),
                                               "mean_abs": float(np.abs(diff).mean())}
        out[target] = entry
    seconds = {c: float(table[c].mean()) for c in ("loss_seconds", "bleu_seconds")}
    out["cpu_seconds_per_subnet"] = seconds
    return out


def _plot(table: pd.DataFrame, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    panels = (("loss", "inherited_loss", "standalone_loss", "dev loss (nats/token)"),
              ("bleu", "inherited_bleu", "standalone_bleu", "dev BLEU (greedy)"))
    for ax, (target, x, y, label) in zip(axes, panels, strict=True):
        if target == "loss":
            xerr = table["inherited_loss_se"] * 1.96
            yerr = table["standalone_loss_se"] * 1.96
        else:
            xerr = np.vstack([table[x] - table[f"{x}_lo"], table[f"{x}_hi"] - table[x]]).clip(0)
            yerr = np.vstack([table[y] - table[f"{y}_lo"], table[f"{y}_hi"] - table[y]]).clip(0)
        for dense, marker, name in ((False, "o", "MoE"), (True, "s", "dense")):
            rows = table["is_dense"].astype(bool) == dense
            ax.errorbar(table.loc[rows, x], table.loc[rows, y],
                        xerr=xerr[:, rows.to_numpy()] if np.ndim(xerr) == 2 else xerr[rows],
                        yerr=yerr[:, rows.to_numpy()] if np.ndim(yerr) == 2 else yerr[rows],
                        fmt=marker, ms=5, capsize=2, alpha=0.8, label=name)
        for _, row in table[~table["role"].isin(("dense", "moe"))].iterrows():
            ax.annotate(row["role"], (row[x], row[y]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        r = report[target]["inherited"]
        best = report[target]["best_proxy"]
        p = report[target][best]
        ax.set_title(f"{label}\nKendall tau {r['tau']:.2f} [{r['tau_lo']:.2f}, "
                     f"{r['tau_hi']:.2f}]; {best}: {p['tau']:.2f} [{p['tau_lo']:.2f}, "
                     f"{p['tau_hi']:.2f}]", fontsize=9)
        ax.set_xlabel(f"inherited from the supernet ({label})", fontsize=9)
        ax.set_ylabel(f"trained alone ({label})", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Supernet fidelity, {len(table)} subnets (95% intervals)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


# ---- the study ------------------------------------------------------------------------------


def _candidates_table(chosen: list[tuple[str, Any]], scores: Mapping[str, Mapping[str, float]],
                      vocab_size: int, normalize_before: bool) -> pd.DataFrame:
    from automoe.costs.flops import flops as count_flops
    from automoe.search.results import experts_summary
    from supernet.params import count_params

    rows = []
    for role, config in chosen:
        counts = count_params(config, vocab_size, normalize_before=normalize_before)
        rows.append({"key": config.key(), "role": role, **scores[config.key()],
                     "flops": count_flops(config).flops, "params": float(counts.hat),
                     "params_active": float(counts.active - counts.embedding),
                     "params_total": float(counts.hat), "is_dense": bool(config.is_dense),
                     "experts": experts_summary(config),
                     "config": json.dumps(config.to_dict(), sort_keys=True,
                                          separators=(",", ":"))})
    return pd.DataFrame(rows)


def _start(settings: FidelitySettings, resume: bool, identity: dict[str, Any]
           ) -> list[tuple[str, Any]]:
    """The chosen subnets: new (written to search.json) or, resuming, the recorded ones
    after checking that supernet, data and settings are the recorded ones."""
    from search_spaces import SubnetConfig

    out = Path(settings.out)
    meta = out / "search.json"
    if resume:
        if not meta.is_file():
            raise ValueError(f"{out}: no fidelity study to resume (no search.json)")
        stored = json.loads(meta.read_text(encoding="utf-8"))
        if stored.get("format") != FORMAT:
            raise ValueError(f"{meta}: format {stored.get('format')!r}, expected {FORMAT!r}")
        changed = [f"{k}: recorded {stored['supernet'].get(k)!r}, now {v!r}"
                   for k, v in identity.items() if stored["supernet"].get(k) != v]
        now = {**settings.to_dict(), "progress": None}
        was = {**stored["fidelity"], "progress": None}
        changed += [f"{k}: recorded {was.get(k)!r}, now {v!r}" for k, v in now.items()
                    if was.get(k) != v]
        if changed:
            raise ValueError(f"{meta}: the study was started with another supernet, data or "
                             f"settings; resume refuses to mix them ({'; '.join(changed)})")
        return [(role, SubnetConfig.from_dict(c, source=f"{meta} ({role})"))
                for role, c in stored["subnets"]]
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; pass --resume to continue a study "
                         "there or choose another --out")
    return []


def run_fidelity(settings: FidelitySettings, *, resume: bool = False) -> FidelityOutcome:
    """Runs (or resumes) the study; see the module docstring."""
    import torch

    from automoe.data import read_meta
    from automoe.search.scoring import read_supernet
    from automoe.training.retrain import RetrainSettings, retrain
    from automoe.training.retrain.job import RETRAIN_DIR, SETTINGS_FILE, TABLE
    from supernet import Transformer

    out = Path(settings.out)
    checkpoint = read_supernet(settings.supernet)
    data = Path(settings.data).resolve()
    meta = read_meta(data)  # a bad data dir fails before anything is written
    if int(meta["vocab_size"]) != checkpoint.vocab_size:
        raise ValueError(f"{data}: vocabulary {meta['vocab_size']} differs from the supernet's "
                         f"{checkpoint.vocab_size} (trained on other data?)")
    retrain_probe = RetrainSettings(run_dir=str(out), keys=("probe",), progress=False,
                                    **settings.retrain)
    retrain_probe.options()  # bad training options fail now
    identity = {"checkpoint": str(checkpoint.file.resolve()), "sha256": checkpoint.sha256,
                "data": str(data), "data_hash": meta.get("input_hash")}
    chosen = _start(settings, resume, identity)
    if not chosen:
        chosen = choose_subnets(checkpoint.space, subnets=settings.subnets,
                                dense=settings.dense, seed=settings.seed, pool=settings.pool)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "search.json", {
            "format": FORMAT, "fidelity": settings.to_dict(), "supernet": identity,
            # what `automoe retrain` and `automoe plot` read from a run dir
            "settings": {"data": str(data), "supernet": identity["checkpoint"],
                         "objectives": ["loss", "flops"], "dev_sentences":
                         settings.dev_sentences, "beam": settings.beam},
            "subnets": [[role, c.to_dict()] for role, c in chosen]})
    keys = [c.key() for _, c in chosen]
    configs = {c.key(): c for _, c in chosen}
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        # 2. inherited scores
        model = None
        if not all((out / "inherited" / f"{k}.json").is_file() for k in keys):
            from automoe.search.scoring import build_supernet

            model = build_supernet(checkpoint.space, checkpoint.vocab_size, checkpoint.options,
                                   source=str(checkpoint.file))
            model.load_state_dict({k: torch.from_numpy(v) for k, v in checkpoint.state.items()})
        dev = _dev_scorer(settings, checkpoint.label_smoothing)
        inherited = _each([(k, configs[k]) for k in keys], out / "inherited",
                          lambda key, config: timed_scores(dev, model, config),
                          desc="inherited", progress=settings.progress)
        model = None  # the supernet is not needed past this point
        normalize_before = bool(checkpoint.options.get("normalize_before", False))
        atomic_write_csv(_candidates_table(chosen, inherited, checkpoint.vocab_size,
                                     normalize_before), out / "candidates.csv")
    finally:
        torch.set_num_threads(threads)

    # 3. standalone training (Ray Tune) and scoring
    job = RetrainSettings(run_dir=str(out), keys=tuple(keys), progress=settings.progress,
                          **settings.retrain)
    table = out / TABLE
    done = table.is_file() and (pd.read_csv(table)["status"] == "finished").all()
    if not done:
        retrain(job, resume=(out / RETRAIN_DIR / SETTINGS_FILE).is_file())
    trained = pd.read_csv(table, dtype={"key": str}).set_index("key")
    unfinished = [k for k in keys if trained.at[k, "status"] != "finished"]
    if unfinished:
        raise ValueError(f"{table}: trials {unfinished} did not finish "
                         f"({', '.join(str(trained.at[k, 'status']) for k in unfinished)}); "
                         "resume the study with --resume")
    torch.set_num_threads(settings.threads)
    try:
        standalone = _each(
            [(k, trained.at[k, "model_dir"]) for k in keys], out / "standalone",
            lambda key, model_dir: dev.score(Transformer.load(model_dir).eval()),
            desc="standalone", progress=settings.progress)
    finally:
        torch.set_num_threads(threads)

    # 4. report
    cands = pd.read_csv(out / "candidates.csv", dtype={"key": str}).set_index("key")
    rows = []
    for key in keys:
        inh, sta = inherited[key], standalone[key]
        row = {"key": key, **{c: cands.at[key, c] for c in
                              ("role", "is_dense", "flops", "params_active", "params_total",
                               "experts", "config")},
               "test_bleu": trained.at[key, "bleu_retrained"],
               "test_chrf": trained.at[key, "chrf_retrained"],
               "loss_seconds": inh["loss_seconds"], "bleu_seconds": inh["bleu_seconds"]}
        for prefix, scores in (("inherited", inh), ("standalone", sta)):
            for m in ("loss", "loss_se", "bleu", "bleu_lo", "bleu_hi", "chrf"):
                row[f"{prefix}_{m}"] = scores.get(m, float("nan"))
        rows.append(row)
    frame = pd.DataFrame(rows)[list(FIDELITY_COLUMNS)]
    dev = f"first {settings.dev_sentences}" if settings.dev_sentences else "all"
    report = {"format": FORMAT, **agreement_report(frame),
              "protocol": {"dev": f"{dev} sentences of the valid split of {data}, beam "
                                  f"{settings.beam}, sacreBLEU 95% bootstrap ({settings.n_bootstrap} resamples); loss: "
                                  "label-smoothed CE per token, SE over sentences",
                           "standalone": json.loads((out / RETRAIN_DIR / SETTINGS_FILE)
                                                    .read_text(encoding="utf-8"))["settings"],
                           "seconds": f"process CPU seconds per subnet, {settings.threads} "
                                      "torch thread(s)"},
              "supernet": identity}
    atomic_write_csv(frame, out / "fidelity.csv")
    atomic_write_json(out / "fidelity.json", report)
    _plot(frame, report, out / "fidelity.png")
    return FidelityOutcome(frame, report, out)
