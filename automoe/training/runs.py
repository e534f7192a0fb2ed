"""Training runs from a prepared data dir: ``automoe supernet train`` and ``automoe train``.

This module wires `automoe.data` (token-budget batches, rank-sharded) to the loop in
`supernet.training.loop` and owns the run dir: ``run.json`` holds everything needed to rebuild the
run (kind, data dir, space or subnet, the resolved `TrainOptions`), so ``--resume`` needs
only the run dir; options given again on resume must equal the stored ones, except
``max_updates`` (where to stop). Data parallelism: launch under ``torchrun``; every rank runs
this same code, rank 0 writes the files.

A standalone retraining run (`train_subnet`) ends by choosing its final weights (the average
of the last N checkpoints, or the best by dev loss), saving the model dir
(``model/config.json`` + ``model.safetensors`` + the tokenizer's ``spm.model``), and scoring
test BLEU/chrF with beam search; the numbers go to ``results.json``.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from automoe.checkpoints import load_supernet, read_supernet
from automoe.data import TokenBatcher, load_split, read_meta
from automoe.data.store import Ragged
from automoe.decoding import evaluate_split
from automoe.io_utils import atomic_write_json, atomic_write_text, read_json
from automoe.training.presets import FinalScoring, TrainOptions, get_preset
from search_spaces import SearchSpace, SubnetConfig, load_space
from supernet.core import check_full_precision
from supernet.options import ModelOptions
from supernet.supertransformer import SuperTransformer
from supernet.training.checkpoint import average_model_states, load_checkpoint
from supernet.training.distributed import DistInfo, init_distributed
from supernet.training.loop import BEST_CHECKPOINT, LAST_CHECKPOINT, TrainResult, train
from supernet.training.sampling import derive_seed, probe_subnets
from supernet.transformer import Transformer

__all__ = ["RUN_FILE", "RunSettings", "resolve_run", "train_supernet", "train_subnet",
           "check_task_routing",
           "fit_subnet", "finish_subnet"]

RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunSettings:
    """What a run trains (stored as ``run.json``).

    Attributes:
        kind: "supernet" or "subnet".
        data_dir: the prepared data dir.
        options: the resolved training options.
        space: search space name or YAML path (supernet runs).
        subnet: the architecture (subnet runs).
        init_from: supernet checkpoint or run dir the subnet inherits its weights from.
    """

    kind: str
    data_dir: str
    options: TrainOptions
    space: str | None = None
    subnet: SubnetConfig | None = None
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "data_dir": self.data_dir, "space": self.space,
                "subnet": None if self.subnet is None else self.subnet.to_dict(),
                "init_from": self.init_from, "options": self.options.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> RunSettings:
        try:
            subnet = data["subnet"]
            return cls(kind=data["kind"], data_dir=data["data_dir"], space=data["space"],
                       subnet=None if subnet is None else SubnetConfig.from_dict(subnet,
                                                                                 source=source),
                       init_from=data["init_from"],
                       options=TrainOptions.from_dict(data["options"], source=source))
        except KeyError as err:
            raise ValueError(f"{source}: missing key {err}") from None


def resolve_run(out: str | Path, *, kind: str, resume: bool, preset: str | None,
                overrides: dict[str, Any], world_size: int = 1,
                **fixed: Any) -> RunSettings:
    """The settings of run dir `out`: the stored ones on resume, otherwise preset + overrides.

    `fixed` holds data_dir/space/subnet/init_from as given on the command line (None = not
    given). On resume, anything given must equal the stored value (max_updates excepted).
    """
    out = Path(out)
    stored_path = out / RUN_FILE
    if resume and stored_path.is_file():
        stored = RunSettings.from_dict(read_json(stored_path), source=str(stored_path))
        if stored.kind != kind:
            raise ValueError(f"{stored_path}: this run dir holds a {stored.kind} run, not {kind}")
        given = {k: v for k, v in fixed.items() if v is not None}
        stored_fixed = {"data_dir": stored.data_dir, "space": stored.space,
                        "subnet": stored.subnet, "init_from": stored.init_from}
        diffs = [f"{k}: stored {stored_fixed[k]!r}, given {_norm(k, v)!r}"
                 for k, v in given.items() if _norm(k, v) != stored_fixed[k]]
        opts = stored.options.to_dict()
        diffs += [f"{k}: stored {opts[k]!r}, given {v!r}" for k, v in overrides.items()
                  if k != "max_updates" and opts.get(k) != v]
        if preset is not None:
            diffs.append("--preset: a resumed run keeps its stored options")
        if diffs:
            raise ValueError(f"{stored_path}: a resumed run keeps its settings (only "
                             f"--max-updates may change): {'; '.join(diffs)}")
        if "max_updates" in overrides:
            stored = RunSettings(**{**stored.__dict__, "options": stored.options.override(
                {"max_updates": overrides["max_updates"]})})
        return stored
    if (out / LAST_CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run ({LAST_CHECKPOINT}); pass --resume to "
                         "continue it or choose another --out")
    if out.is_dir() and any(out.iterdir()) and not stored_path.is_file():
        raise ValueError(f"--out {out}: exists, is not empty and is not a training run dir "
                         "(no run.json); choose another --out")
    missing = [k for k in ("data_dir",) + (("space",) if kind == "supernet" else ("subnet",))
               if fixed.get(k) is None]
    if missing:
        raise ValueError(f"a new {kind} run needs {', '.join('--' + m.split('_')[0] for m in missing)}")
    options = get_preset(preset or "demo", kind).override(overrides).resolve(world_size)
    return RunSettings(kind=kind, options=options,
                       **{k: _norm(k, v) for k, v in fixed.items() if k in
                          ("data_dir", "space", "subnet", "init_from")})


def _norm(key: str, value: Any) -> Any:
    if key in ("data_dir", "init_from") and value is not None:
        return str(Path(value).resolve())
    return value


# ---- data ---------------------------------------------------------------------------------


def _head(r: Ragged, n: int) -> Ragged:
    """The first n sentences (views, no copy)."""
    return Ragged(r.flat[:int(r.offsets[n])], np.asarray(r.offsets[:n + 1]), source=r.source)


def _batchers(data_dir: str, opts: TrainOptions, info: DistInfo) -> tuple[TokenBatcher,
                                                                          TokenBatcher]:
    train_split, valid_split = load_split(data_dir, "train"), load_split(data_dir, "valid")
    train_b = TokenBatcher(train_split.src, train_split.tgt, max_tokens=opts.max_tokens,
                           seed=opts.seed, rank=info.rank, world_size=info.world_size,
                           tasks=train_split.tasks)
    n = len(valid_split) if opts.valid_sentences == 0 else min(opts.valid_sentences,
                                                               len(valid_split))
    valid_tasks = None if valid_split.tasks is None else valid_split.tasks[:n]
    valid_b = TokenBatcher(_head(valid_split.src, n), _head(valid_split.tgt, n),
                           max_tokens=opts.max_tokens, shuffle=False, rank=info.rank,
                           world_size=info.world_size, tasks=valid_tasks)
    return train_b, valid_b


# ---- supernet -----------------------------------------------------------------------------


def _start(out: Path, settings: RunSettings, info: DistInfo) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_json(out / RUN_FILE, settings.to_dict())


def train_supernet(settings: RunSettings, out: str | Path, *, resume: bool = False,
                   device: str | None = None, progress: bool = True,
                   info: DistInfo | None = None) -> TrainResult:
    """Trains the SuperTransformer of ``settings.space`` on ``settings.data_dir`` into `out`."""
    info, dev = (info, torch.device(device or "cpu")) if info else init_distributed(device)
    out = Path(out)
    opts = settings.options
    assert settings.space is not None  # a supernet run has a space (resolve_run)
    space = load_space(settings.space)
    meta = read_meta(settings.data_dir)
    check_task_routing(space, meta, source=str(settings.data_dir))
    vocab = int(meta["vocab_size"])
    dims = space.supernet
    options = opts.model_options(positions_dim=max(dims.encoder_embed_dim,
                                                   dims.decoder_embed_dim))
    model = SuperTransformer(space, vocab, options=options, seed=derive_seed("init", opts.seed))
    if settings.init_from and not (resume and (out / LAST_CHECKPOINT).exists()):
        _inherit_supernet(model, settings.init_from, space, vocab)
    train_b, valid_b = _batchers(settings.data_dir, opts, info)
    identity = {"kind": "supernet", "space": space.to_dict(), "vocab_size": vocab,
                "model_options": model.options.to_dict()}
    probes = probe_subnets(space, seed=opts.seed, num_random=opts.probe_random)
    _start(out, settings, info)
    return train(model, opts.train_config(supernet=True), run_dir=out, train_batches=train_b,
                 valid_batches=valid_b, identity=identity, probes=probes, space=space,
                 resume=resume, device=dev, info=info, progress=progress)


def check_task_routing(space: SearchSpace, meta: dict, *, source: str) -> None:
    """ValueError when ``space`` offers task routing and the data dir (``meta``) has no
    target-language tags: its routers would route by the first word of each sentence."""
    routed = [side.name for side in space.sides() if "task" in side.routing]
    if routed and not meta.get("tasks"):
        raise ValueError(f"{source}: space {space.name!r} routes the {' and '.join(routed)} by "
                         "task, but this data dir has no tasks (prepare a multilingual one: "
                         "--corpus bible-en-x, or --targets with your own files)")


def _inherit_supernet(model: SuperTransformer, path: str, space: SearchSpace, vocab: int
                      ) -> None:
    """Loads the weights of the trained supernet at `path` (same space and vocabulary) into
    `model`: a few-shot sub-supernet starts from the one-shot one."""
    source = read_supernet(path)
    if source.space.to_dict() != space.to_dict() or source.vocab_size != vocab:
        raise ValueError(f"{source.file}: --init-from needs a supernet of the same space and "
                         f"vocabulary (space {source.space.name!r}, vocabulary "
                         f"{source.vocab_size}; here {space.name!r}, {vocab})")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in source.state.items()})
    except RuntimeError as err:  # other model options (layer-norm placement, positions)
        raise ValueError(f"{source.file}: --init-from: its weights do not fit this supernet's "
                         f"options ({' '.join(str(err).split())[:300]})") from None


# ---- standalone subnet --------------------------------------------------------------------


def fit_subnet(settings: RunSettings, out: str | Path, *, resume: bool = False,
               device: str | None = None, progress: bool = True,
               info: DistInfo | None = None) -> TrainResult:
    """The training half of `train_subnet`: trains ``settings.subnet`` into run dir `out`
    up to ``settings.options.max_updates`` (continuing ``checkpoint_last.pt`` with `resume`)
    and stops there; no model dir, no test BLEU. Stopping short of the schedule's length is
    an interruption, so calling it again with a larger max_updates and ``resume=True`` gives
    the uninterrupted run exactly (how `automoe retrain` trains in chunks)."""
    return _fit_subnet(settings, out, resume=resume, device=device, progress=progress,
                       info=info)[0]


def _fit_subnet(settings: RunSettings, out: str | Path, *, resume: bool, device: str | None,
                progress: bool, info: DistInfo | None
                ) -> tuple[TrainResult, Transformer, DistInfo, torch.device]:
    info, dev = (info, torch.device(device or "cpu")) if info else init_distributed(device)
    out, opts, config = Path(out), settings.options, settings.subnet
    assert config is not None
    model, identity = _subnet_model(settings)
    if settings.init_from and not (resume and (out / LAST_CHECKPOINT).exists()):
        supernet, space = load_supernet(settings.init_from)
        space.validate(config, source=f"--subnet (space of {settings.init_from})")
        if supernet.vocab_size != model.vocab_size:
            raise ValueError(f"{settings.init_from}: supernet vocabulary {supernet.vocab_size} "
                             f"differs from {settings.data_dir}'s {model.vocab_size}")
        model.load_state_dict(supernet.extract(config).state_dict())
    train_b, valid_b = _batchers(settings.data_dir, opts, info)
    _start(out, settings, info)
    result = train(model, opts.train_config(supernet=False), run_dir=out, train_batches=train_b,
                   valid_batches=valid_b, identity=identity, probes={"model": config},
                   resume=resume, device=dev, info=info, progress=progress)
    return result, model, info, dev


def _subnet_model(settings: RunSettings) -> tuple[Transformer, dict[str, Any]]:
    """The freshly initialised Transformer of a subnet run and its checkpoint identity."""
    config, opts = settings.subnet, settings.options
    assert config is not None
    check_full_precision(config, source=f"--subnet {config.key()}",
                         reason="training runs experts at 32 bits (export the quantized "
                                "subnet from a supernet instead)")
    vocab = int(read_meta(settings.data_dir)["vocab_size"])
    options = opts.model_options(positions_dim=max(config.encoder_embed_dim,
                                                   config.decoder_embed_dim))
    if settings.init_from:  # inherited weights: the supernet's position table, flag or not
        options = dataclasses.replace(options,
                                      positions_dim=_supernet_positions(settings.init_from))
    model = Transformer(config, vocab, options=options,
                                    seed=derive_seed("init", opts.seed))
    return model, _identity(model)


def _supernet_positions(path: str | Path) -> int | None:
    """``positions_dim`` of the supernet a subnet run inherits from (run dir or file)."""
    path = Path(path)
    file = path / LAST_CHECKPOINT if path.is_dir() else path
    state = load_checkpoint(file, expect={"kind": "supernet"})
    return ModelOptions.from_dict(state["model_options"], source=str(file)).positions_dim


def _identity(model: Transformer) -> dict[str, Any]:
    return {"kind": "transformer", "subnet": model.config.to_dict(),
            "vocab_size": model.vocab_size, "model_options": model.options.to_dict()}


def train_subnet(settings: RunSettings, out: str | Path, *, resume: bool = False,
                 average_last: int = FinalScoring.average_last, beam: int = FinalScoring.beam,
                 lenpen: float = FinalScoring.lenpen,
                 test_sentences: int = FinalScoring.test_sentences, device: str | None = None,
                 progress: bool = True, info: DistInfo | None = None) -> dict[str, Any]:
    """Trains a standalone Transformer of ``settings.subnet`` (from scratch, or from the
    weights it inherits from ``settings.init_from``), then saves ``out/model`` and scores
    test BLEU. Returns the summary written to ``out/results.json``."""
    result, model, info, dev = _fit_subnet(settings, out, resume=resume, device=device,
                                           progress=progress, info=info)
    if not info.is_main:
        return {}
    return finish_subnet(settings, out, result, model=model, average_last=average_last,
                         beam=beam, lenpen=lenpen, test_sentences=test_sentences,
                         device=str(dev), progress=progress)


def finish_subnet(settings: RunSettings, out: str | Path, result: TrainResult, *,
                  model: Transformer | None = None,
                  average_last: int = FinalScoring.average_last, beam: int = FinalScoring.beam,
                  lenpen: float = FinalScoring.lenpen,
                  test_sentences: int = FinalScoring.test_sentences, device: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """The scoring half of `train_subnet` (main rank only): chooses the final weights of run
    dir `out` (the average of the last `average_last` update checkpoints, else the best by
    dev loss, else the last), saves ``out/model`` (+ ``spm.model``), scores test BLEU/chrF by
    beam search and writes ``out/results.json``, whose summary it returns.

    `model` is the trained model when the caller still holds it; without it the model is
    rebuilt from ``settings`` (the last weights come from ``checkpoint_last.pt``)."""
    out = Path(out)
    dev = torch.device(device or "cpu")
    if model is not None:
        identity = _identity(model)
    else:
        model, identity = _subnet_model(settings)
        if (out / LAST_CHECKPOINT).exists():
            model.load_state_dict(load_checkpoint(out / LAST_CHECKPOINT,
                                                  expect=identity)["model"])
    if average_last > 0:
        files = sorted(out.glob("checkpoint_[0-9]*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if len(files) < average_last:
            raise ValueError(f"--average-last {average_last}: only {len(files)} update "
                             f"checkpoints in {out} (raise --keep-last)")
        chosen = files[-average_last:]
        model.load_state_dict(average_model_states(chosen, expect=identity))
        source = f"average of {', '.join(p.name for p in chosen)}"
    elif (out / BEST_CHECKPOINT).exists():
        model.load_state_dict(load_checkpoint(out / BEST_CHECKPOINT, expect=identity)["model"])
        source = BEST_CHECKPOINT
    else:  # stopped before its first validation: the weights it has
        source = f"{LAST_CHECKPOINT} (never validated)"
    model_dir = model.save(out / "model", overwrite=True,
                           extra={"weights": source, "run_dir": str(out.resolve())})
    shutil.copyfile(Path(settings.data_dir) / "spm.model", model_dir / "spm.model")
    summary: dict[str, Any] = {"model_dir": str(model_dir), "weights": source,
                               "updates": result.update, "best_dev_loss": result.best_loss}

    scores = evaluate_split(model.to(dev).eval(), settings.data_dir, "test",
                            limit=test_sentences or None, beam=beam, lenpen=lenpen, device=dev,
                            progress=progress)
    atomic_write_text(out / "test.hyp.txt", "".join(h + "\n" for h in scores.pop("hypotheses")))
    summary["test"] = scores
    atomic_write_json(out / "results.json", summary)
    return summary


def finish_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
