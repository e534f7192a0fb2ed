"""The training loop for the SuperTransformer (and, with a fixed architecture, for a
standalone Transformer): sampling rule, label-smoothed loss + MoE auxiliary losses, Adam,
warmup schedule, clipping, accumulation, manual data-parallel gradient sync, periodic
validation of probe subnets, atomic checkpoints and exact resume.

Determinism: the subnets of update ``u`` come from ``Random(derive_seed("subnet", seed, u))``;
before the forward pass of micro-batch ``m`` (global index ``m * world_size + rank``) and
subnet ``j``, torch's generator is seeded from ``(seed, u, global index, j)``, so dropout
depends on neither the process layout nor the history: a resumed run redraws exactly what
the uninterrupted one drew, and 2 ranks draw what 1 rank with 2 accumulation steps draws.
(The global generator is forked for the whole call and restored afterwards.) Gradients are
summed over all passes, ranks and accumulation steps and divided by the number of labelled
tokens of all of them (times the subnets of the update), so the update does not depend on
how the global batch is split.

Outputs in ``run_dir``: ``checkpoint_last.pt`` (everything needed to resume),
``checkpoint_best.pt`` (model only, lowest mean probe dev loss), ``checkpoint_<update>.pt``
(model only, the last ``keep_last``), ``train_log.csv`` and ``valid_log.csv``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from search_spaces.config import SubnetConfig
from supernet.training.checkpoint import load_checkpoint, plain, save_checkpoint
from supernet.training.config import TrainConfig
from supernet.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_module,
    sync_gradients,
)
from supernet.training.evaluate import EvalResult, autocast_for, evaluate_loss, forward
from supernet.training.logs import CsvLog
from supernet.training.loss import distillation_kl, label_smoothed_nll
from supernet.training.sampling import Space, derive_seed, subnets_for_update

__all__ = ["BatchSource", "TrainResult", "train", "TRAIN_COLUMNS", "VALID_COLUMNS",
           "LAST_CHECKPOINT", "BEST_CHECKPOINT"]

TRAIN_COLUMNS = ["update", "lr", "loss", "nll", "ntokens", "load_balance", "z_loss", "gnorm",
                 "subnets"]
VALID_COLUMNS = ["update", "probe", "subnet_key", "loss", "nll", "ppl"]
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"


class BatchSource(Protocol):
    """Training batches: (src [B, S], prev [B, T], target [B, T], ...) LongTensors, padded
    with PAD_ID; each ``iter()`` yields the rest of the current epoch. Resumable."""

    def __iter__(self) -> Iterator[Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    """What a `train` call did.

    Attributes:
        run_dir: where the checkpoints and logs are.
        update: updates done in total (this call and before it).
        best_loss: lowest mean probe dev loss seen in the run (inf if never validated).
        last_valid: the last validation's result per probe name.
        tokens: labelled target tokens trained on in this call (all ranks, once per update).
        train_seconds: wall time of the updates of this call (validation and saving excluded).
    """

    run_dir: Path
    update: int
    best_loss: float
    last_valid: dict[str, EvalResult]
    tokens: int
    train_seconds: float


def train(model: torch.nn.Module, config: TrainConfig, *, run_dir: str | Path,
          train_batches: BatchSource, valid_batches: Iterable[Any], identity: Mapping[str, Any],
          probes: Mapping[str, SubnetConfig], space: Space | None = None, resume: bool = False,
          device: torch.device | str = "cpu", info: DistInfo | None = None,
          progress: bool = True) -> TrainResult:
    """Trains `model` up to ``config.max_updates`` updates (see the module docstring).

    Args:
        model: a supernet called as ``model(src, prev, subnet)`` (when ``config.sampling``
            is set; then `space` is required) or a plain model called as ``model(src, prev)``.
            Both return ``(logits [B, T, V], aux)``; ``aux.load_balance`` / ``aux.z_loss``
            (scalar tensors) are used when present.
        config: the run's settings.
        run_dir: output folder (shared by all ranks).
        train_batches: this rank's training batches.
        valid_batches: this rank's shard of the dev set (re-iterated at each validation).
        identity: what the model is (e.g. kind, vocab size, search space); stored in
            checkpoints, and a checkpoint with another identity is refused on resume.
        probes: named subnets validated each time (for a plain model: its own config).
        resume: continue from ``run_dir/checkpoint_last.pt`` if it exists.
        device: where to train (the model is moved there).
        info: this process's data-parallel rank (default: single process).
        progress: show a tqdm bar (main rank only).
    """
    if config.sampling is not None and space is None:
        raise ValueError("a sampling rule needs the search space (space=...)")
    if not probes:
        raise ValueError("train needs at least one probe subnet to validate")
    return _Trainer(model, config, run_dir=Path(run_dir), train_batches=train_batches,
                    valid_batches=valid_batches, identity=dict(identity), probes=dict(probes),
                    space=space, device=torch.device(device), info=info or DistInfo(),
                    progress=progress).run(resume)


class _Trainer:
    def __init__(self, model: torch.nn.Module, config: TrainConfig, *, run_dir: Path,
                 train_batches: BatchSource, valid_batches: Iterable[Any],
                 identity: dict[str, Any], probes: dict[str, SubnetConfig],
                 space: Space | None, device: torch.device, info: DistInfo,
                 progress: bool) -> None:
        self.model = model.to(device)
        self.config, self.run_dir, self.device, self.info = config, run_dir, device, info
        self.train_batches, self.valid_batches = train_batches, valid_batches
        self.identity, self.probes, self.space = identity, probes, space
        self.progress = progress and info.is_main
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.params, lr=config.schedule.lr(0), betas=config.adam_betas, eps=config.adam_eps,
            weight_decay=config.weight_decay)
        self.train_log = CsvLog(run_dir / "train_log.csv", TRAIN_COLUMNS)
        self.valid_log = CsvLog(run_dir / "valid_log.csv", VALID_COLUMNS)
        self.update = 0
        self.best_loss = math.inf
        self.last_valid: dict[str, EvalResult] = {}

    # ---- state ----------------------------------------------------------------------------

    def _restore(self, resume: bool) -> None:
        last = self.run_dir / LAST_CHECKPOINT
        if not last.exists():
            if self.info.is_main:  # a fresh run starts with empty logs
                self.train_log.flush()
                self.valid_log.flush()
            return
        if not resume:
            raise ValueError(f"{self.run_dir} already holds a run ({LAST_CHECKPOINT}); resume it "
                             "or choose another output dir")
        state = load_checkpoint(last, expect=self.identity)
        saved = TrainConfig.from_dict(state["train_config"], source=str(last))
        diffs = saved.differences(self.config, ignore=("max_updates",))
        if diffs:
            raise ValueError(f"{last}: the run was started with other settings (only "
                             f"max_updates may change on resume): {'; '.join(diffs)}")
        if state["world_size"] != self.info.world_size:
            raise ValueError(f"{last}: the run used {state['world_size']} data-parallel "
                             f"process(es), this one has {self.info.world_size}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"{last}: weights do not fit this model ({str(err)[:300]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_batches.load_state_dict(state["data"])
        self.update, self.best_loss = int(state["update"]), float(state["best_loss"])
        self.train_log.restore(self.update)
        self.valid_log.restore(self.update)

    def _save(self) -> None:
        if self.info.is_main:
            header = {**self.identity, "update": self.update, "best_loss": self.best_loss}
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, {
                **header,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "train_config": self.config.to_dict(),
                # the lr is a pure function of the update count: this is the whole scheduler
                "scheduler": {**self.config.schedule.to_dict(), "num_updates": self.update},
                "data": plain(self.train_batches.state_dict()),
                "world_size": self.info.world_size,
                # every random draw is a function of (seed, update, pass): no generator state
                "rng": {"seed": self.config.seed, "scheme": "sha256(seed, update, pass)"},
                "probes": {name: cfg.to_dict() for name, cfg in self.probes.items()},
            })
            if self.config.keep_last:
                save_checkpoint(self.run_dir / f"checkpoint_{self.update}.pt",
                                {**header, "model": self.model.state_dict()})
                kept = sorted(self.run_dir.glob("checkpoint_[0-9]*.pt"),
                              key=lambda p: int(p.stem.split("_")[1]))
                for old in kept[:-self.config.keep_last]:
                    old.unlink()
            self.train_log.flush()
            self.valid_log.flush()
        barrier(self.info)

    # ---- one update -----------------------------------------------------------------------

    def _subnets(self) -> tuple[SubnetConfig | None, ...]:
        if self.config.sampling is None:
            return (None,)
        assert self.space is not None
        return subnets_for_update(self.space, self.config.sampling, seed=self.config.seed,
                                  update=self.update + 1)

    def _step(self, batches: Iterator[Any]) -> dict[str, Any]:
        cfg, info = self.config, self.info
        update = self.update + 1
        subnets = self._subnets()
        lr = cfg.schedule.lr(update - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        if hasattr(self.model, "random_routing"):  # a supernet: the router warm-up
            setattr(self.model, "random_routing", update <= cfg.router_warmup)  # noqa: B010
        self.optimizer.zero_grad(set_to_none=True)
        sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # tokens, loss, nll, load-balance, z-loss
        for micro in range(cfg.update_freq):
            src, prev, target = (t.to(self.device, non_blocking=True) for t in next(batches)[:3])
            teacher = None  # the largest subnet's detached log-probs [B, T, V] (distillation)
            for j, subnet in enumerate(subnets):
                torch.manual_seed(derive_seed("dropout", cfg.seed, update,
                                              micro * info.world_size + info.rank, j))
                with autocast_for(self.device, cfg.bf16, cpu=cfg.cpu_bf16):
                    logits, aux = forward(self.model, src, prev, subnet)
                out = label_smoothed_nll(logits, target, epsilon=cfg.label_smoothing)
                loss = out.loss
                if cfg.distill_weight > 0:  # sandwich: subnets[0] is the largest, the teacher
                    if j == 0:
                        teacher = torch.log_softmax(logits.detach().float(), dim=-1)
                    else:
                        assert teacher is not None  # set at j == 0
                        kd = distillation_kl(logits, teacher, target)
                        loss = (1.0 - cfg.distill_weight) * loss + cfg.distill_weight * kd
                total = loss
                lb = getattr(aux, "load_balance", None)
                z = getattr(aux, "z_loss", None)
                if lb is not None and cfg.load_balance_coef:
                    total = total + (out.ntokens * cfg.load_balance_coef) * lb.float()
                if z is not None and cfg.z_loss_coef:
                    total = total + (out.ntokens * cfg.z_loss_coef) * z.float()
                total.backward()
                sums[0] += out.ntokens
                sums[1] += float(loss.detach())
                sums[2] += float(out.nll)
                sums[3] += out.ntokens * (float(lb.detach()) if lb is not None else 0.0)
                sums[4] += out.ntokens * (float(z.detach()) if z is not None else 0.0)
        sync_gradients(self.params, info)
        ntok, loss_sum, nll, lb_sum, z_sum = all_reduce_sum(sums, info, self.device)
        grads = [p for p in self.params if p.grad is not None]
        grad_tensors = [p.grad for p in grads if p.grad is not None]  # the same, typed
        for g in grad_tensors:
            g.mul_(1.0 / ntok)
        if cfg.clip_norm > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(grads, cfg.clip_norm))
        else:
            gnorm = float(torch.nn.utils.get_total_norm(grad_tensors))
        if math.isfinite(gnorm):
            self.optimizer.step()
        else:  # skip a non-finite update rather than poison the weights and Adam's moments
            self.optimizer.zero_grad(set_to_none=True)
        self.update = update
        keys = ";".join(s.key() if s is not None else next(iter(self.probes.values())).key()
                        for s in subnets)
        return {"update": update, "lr": lr, "loss": loss_sum / ntok, "nll": nll / ntok,
                "ntokens": int(round(ntok / len(subnets))), "load_balance": lb_sum / ntok,
                "z_loss": z_sum / ntok, "gnorm": gnorm, "subnets": keys}

    def _validate(self) -> float:
        cfg = self.config
        self.last_valid = {}
        for name, subnet in self.probes.items():
            result = evaluate_loss(
                self.model, self.valid_batches, subnet if cfg.sampling is not None else None,
                label_smoothing=cfg.label_smoothing, device=self.device, bf16=cfg.bf16,
                info=self.info)
            self.last_valid[name] = result
            self.valid_log.append({"update": self.update, "probe": name,
                                   "subnet_key": subnet.key(), "loss": result.loss,
                                   "nll": result.nll, "ppl": result.ppl})
        return sum(r.loss for r in self.last_valid.values()) / len(self.last_valid)

    def _save_best(self, loss: float) -> None:
        self.best_loss = loss
        if self.info.is_main:
            save_checkpoint(self.run_dir / BEST_CHECKPOINT,
                            {**self.identity, "update": self.update, "best_loss": loss,
                             "model": self.model.state_dict()})
        barrier(self.info)

    # ---- the loop -------------------------------------------------------------------------

    def run(self, resume: bool) -> TrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._restore(resume)
        broadcast_module(self.model, self.info)
        cfg = self.config
        tokens, seconds, rate = 0, 0.0, 0.0
        bar = tqdm(total=cfg.max_updates, initial=min(self.update, cfg.max_updates),
                   disable=not self.progress, desc="train", dynamic_ncols=True)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                batches = _endless(self.train_batches)
                while self.update < cfg.max_updates:
                    start = time.perf_counter()
                    row = self._step(batches)
                    elapsed = time.perf_counter() - start
                    tokens += row["ntokens"]
                    seconds += elapsed
                    now = row["ntokens"] / max(elapsed, 1e-9)
                    rate = now if rate == 0.0 else 0.9 * rate + 0.1 * now
                    self.train_log.append(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{rate:,.0f}",
                                    lr=f"{row['lr']:.2e}")
                    last = self.update == cfg.max_updates
                    # stopping before the planned length is like an interruption (no extra
                    # validation), so that resuming gives the uninterrupted run's log
                    final = last and self.update >= (cfg.schedule.total_updates or 0)
                    if final or (cfg.validate_every and self.update % cfg.validate_every == 0):
                        loss = self._validate()
                        if loss < self.best_loss:
                            self._save_best(loss)
                        if self.progress:
                            bar.write(_valid_line(self.update, self.last_valid))
                    if last or (cfg.save_every and self.update % cfg.save_every == 0):
                        self._save()
        finally:
            bar.close()
            if self.info.is_main and self.run_dir.exists():
                self.train_log.flush()
                self.valid_log.flush()
        return TrainResult(self.run_dir, self.update, self.best_loss, dict(self.last_valid),
                           tokens, seconds)


def _endless(source: BatchSource) -> Iterator[Any]:
    """Batches across epoch boundaries."""
    while True:
        empty = True
        for batch in source:
            empty = False
            yield batch
        if empty:
            # an epoch can end exactly at a checkpoint; only two empty passes mean no data
            for batch in source:
                empty = False
                yield batch
            if empty:
                raise ValueError("the training batch source yields no batches")


def _valid_line(update: int, results: Mapping[str, EvalResult]) -> str:
    parts = ", ".join(f"{name} {r.loss:.3f}/{r.ppl:.1f}" for name, r in results.items())
    return f"update {update} dev loss/ppl: {parts}"
