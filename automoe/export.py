"""Export one subnet of a search run as a standalone model, and load it back in one call.

``export_subnet(RUN_DIR, SUBNET_DIR, pick=RULE)`` chooses a candidate of a (finished or
running) search run, extracts its weights from the supernet the search scored (inherited,
not retrained) and writes SUBNET_DIR atomically:

- ``config.json`` + ``model.safetensors``: the static `supernet.Transformer`
  (`Transformer.save`); ``config.json``'s ``extra`` holds the provenance (search run, key,
  pick rule, supernet checkpoint and its sha256);
- ``spm.model``: the tokenizer of the data dir the search scored on, so ``automoe translate
  SUBNET_DIR`` and ``automoe evaluate SUBNET_DIR --data DIR`` work without ``--data``;
- ``subnet.json``: the `SubnetConfig` JSON (``automoe train --subnet``, ``automoe cost``);
- ``scores.json``: the candidate's row of ``candidates.csv`` (bleu, chrf, loss, nll, flops,
  params, latency statistics, feasibility, ...), the run's protocols, the latency device,
  how BLEU/loss were scored, and ``"weights": "inherited from supernet <path> (not
  retrained)"``.

Pick rules (``--pick``):

- ``best-bleu`` (default): the highest ``bleu`` among feasible candidates; ``best-loss``:
  the lowest ``loss``. Ties go to the smaller key.
- ``knee``: the knee of the feasible front (``pareto.csv``): each objective of the run
  (names and directions from ``search.json``) is normalised to [0, 1] over the front
  (0 = best; an objective constant on the front is 0 everywhere) and the point nearest the
  ideal point (0, ..., 0) in Euclidean distance wins (ties: smaller key).
- ``METRIC<=X`` / ``METRIC>=X``: among feasible candidates meeting the bound, the best by
  BLEU (or, in a run without BLEU, by the run's first objective). METRIC is ``latency``
  (column ``latency_ms``; X ``80ms``, ``80``, ``0.08s``), ``flops`` (``1.5G``, ``1.5e9``,
  ``300M``), ``params`` (``10M``), or any other search metric (``bleu>=20``, ``loss<=4``).
- a HASH: a candidate's 16-hex ``key`` or a unique prefix of at least 4 hex digits (the
  candidate need not be feasible).

``load_subnet(SUBNET_DIR)`` returns an `ExportedSubnet` (model in eval mode, tokenizer,
config, scores) whose ``translate(texts)`` decodes with `automoe.decoding`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automoe.checkpoints import load_supernet
from automoe.data import Tokenizer
from automoe.decoding import translate_texts
from automoe.io_utils import atomic_dir, atomic_write_json, file_sha256, read_json
from automoe.pick import DEFAULT_PICK, PICK_HELP
from automoe.run_dir import SearchRun, read_run
from automoe.search.objectives import parse_bound
from automoe.search.results import OPERATIONAL_COLUMNS
from search_spaces import SubnetConfig
from search_spaces.space import check_precision_variant, load_space
from supernet import Transformer
from supernet.model_dir import read_model_config
from supernet.task_extract import for_task

if TYPE_CHECKING:
    from automoe.data.tokenizer import Tokenizer
    from search_spaces.config import SubnetConfig
    from supernet.transformer import Transformer

__all__ = ["ExportedSubnet", "ExportResult", "DEFAULT_PICK", "PICK_HELP", "SUBNET_FILES",
           "RUNTIMES", "select_key", "export_subnet", "load_subnet",
           "write_task_model"]

# What SUBNET_DIR holds, in the order written.
SUBNET_FILES = ("config.json", "model.safetensors", "spm.model", "subnet.json", "scores.json")

_HASH_RE = re.compile(r"^[0-9a-fA-F]+$")
_MIN_PREFIX = 4


# ---- pick rules (pure functions of the tables) ----------------------------------------------


def _first_best(frame: pd.DataFrame, column: str, maximize: bool) -> str:
    """Key of the best row by ``column`` (NaN never wins), ties by smaller key."""
    rows = frame[frame[column].notna()]
    rows = rows.sort_values([column, "key"], ascending=[not maximize, True], kind="mergesort")
    return str(rows["key"].iloc[0])


def _feasible(table: pd.DataFrame) -> pd.DataFrame:
    if "feasible" not in table:
        return table
    return table[table["feasible"].astype(str).str.lower() == "true"]


def _knee(front: pd.DataFrame, objectives: Sequence[Any], source: str) -> str:
    if front.empty:
        raise ValueError(f"{source}: the feasible front is empty (no feasible candidate); "
                         "pick a candidate by key instead")
    missing = [o.name for o in objectives if o.name not in front]
    if missing:
        raise ValueError(f"{source}: pareto.csv has no column {missing} of the run's objectives")
    # Minimisation space [N, M], then [0, 1] per objective over the front (0 = best).
    points = np.column_stack([front[o.name].to_numpy(float) * (-1.0 if o.maximize else 1.0)
                              for o in objectives])
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    distance = np.sqrt((((points - low) / span) ** 2).sum(axis=1))
    order = np.lexsort((front["key"].to_numpy(str), distance))
    return str(front["key"].iloc[order[0]])


def _bounded(table: pd.DataFrame, rule: str, objectives: Sequence[Any], source: str) -> str:
    limit = parse_bound(rule, flag="--pick")  # same syntax and units as --constraint
    column, op, bound = limit.name, limit.op, limit.bound
    if column not in table or table[column].isna().all():
        raise ValueError(f"{source}: the run has no {column!r} values (not measured in this "
                         f"search), so --pick {rule!r} cannot be applied")
    feasible = _feasible(table)
    values = feasible[column]
    meets = feasible[(values <= bound) if op == "<=" else (values >= bound)]
    if meets.empty:
        if values.notna().any():
            closest = _first_best(feasible, column, maximize=op == ">=")
            value = float(feasible.loc[feasible["key"] == closest, column].iloc[0])
            which = "smallest" if op == "<=" else "largest"
            raise ValueError(f"{source}: no feasible candidate has {column}{op}{bound:g} "
                             f"(--pick {rule!r}); the {which} available is {column}={value:g} "
                             f"(key {closest})")
        raise ValueError(f"{source}: no feasible candidate to apply --pick {rule!r} to")
    if "bleu" in meets and meets["bleu"].notna().any():
        return _first_best(meets, "bleu", maximize=True)
    first = objectives[0]
    return _first_best(meets, first.name, first.maximize)


def _by_hash(table: pd.DataFrame, rule: str, source: str) -> str:
    prefix = rule.lower()
    if len(prefix) < _MIN_PREFIX:
        raise ValueError(f"--pick {rule!r}: a key prefix needs at least {_MIN_PREFIX} hex "
                         f"digits (or use {PICK_HELP})")
    keys = sorted({k for k in table["key"].astype(str) if k.startswith(prefix)})
    if not keys:
        raise ValueError(f"{source}: no candidate has a key starting with {rule!r}")
    if len(keys) > 1:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise ValueError(f"{source}: key prefix {rule!r} is ambiguous: {len(keys)} candidates "
                         f"({shown}); give more digits")
    return keys[0]


def select_key(candidates: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Any],
               rule: str, *, source: str = "search run") -> str:
    """The key of the candidate ``rule`` picks (see the module docstring).

    Args:
        candidates: ``candidates.csv`` (``key`` as str, ``feasible``, metric columns).
        front: ``pareto.csv`` (the feasible front).
        objectives: the run's `evolution.Objective`s (knee; fallback ranking).
        rule: the pick rule.
        source: named in error messages (the run dir).
    """
    rule = rule.strip()
    if rule in ("best-bleu", "best-loss"):
        column = rule.removeprefix("best-")
        if column not in candidates or candidates[column].isna().all():
            raise ValueError(f"{source}: the run has no {column!r} column (objectives "
                             f"{','.join(o.name for o in objectives)}); use --pick "
                             f"{'best-loss' if column == 'bleu' else 'knee'} or another rule")
        feasible = _feasible(candidates)
        if feasible[column].notna().sum() == 0:
            raise ValueError(f"{source}: no feasible candidate with a {column!r} value")
        return _first_best(feasible, column, maximize=column == "bleu")
    if rule == "knee":
        return _knee(front, objectives, source)
    if "<=" in rule or ">=" in rule:
        return _bounded(candidates, rule, objectives, source)
    if _HASH_RE.match(rule):
        return _by_hash(candidates, rule, source)
    raise ValueError(f"--pick {rule!r}: unknown pick rule; expected {PICK_HELP}")


# ---- export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What `export_subnet` wrote: the dir, its files, the chosen key and its scores."""

    path: Path
    key: str
    rule: str
    files: tuple[Path, ...]
    scores: dict[str, Any]


def _plain(value: Any) -> Any:
    """A CSV cell as a JSON value (NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _check_out(out: Path, source: Path, overwrite: bool, *, what: str = "search run",
               owned: tuple[str, ...] = SUBNET_FILES,
               marker: tuple[str, ...] = ("subnet.json", "scores.json"),
               writer: str = "automoe export") -> None:
    """ValueError unless ``out`` may receive a model dir written from ``source`` (a
    ``what``): not ``source`` itself or a folder above it, and, when not empty, replaced
    only with ``overwrite`` and only if it holds the ``marker`` files and nothing but the
    ``owned`` ones (a directory ``writer`` wrote)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: exists and is not a directory")
    resolved, source_resolved = out.resolve(), source.resolve()
    if resolved == source_resolved or resolved in source_resolved.parents:
        raise ValueError(f"-o {out}: would replace the {what} {source} itself")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"-o {out}: exists and is not empty (pass --overwrite to replace "
                             "it, or choose another directory)")
        names = {p.name for p in out.iterdir()}
        foreign = sorted(names - set(owned))
        if not set(marker) <= names or foreign:
            raise ValueError(f"-o {out}: --overwrite only replaces a directory written by "
                             f"`{writer}` (its files and nothing else); this one holds "
                             f"{', '.join(foreign[:5]) or 'no ' + '/'.join(marker)}")


def _supernet_file(run: SearchRun) -> tuple[Path, str | None]:
    identity = run.meta.get("supernet") or {}
    file = identity.get("checkpoint") or run.meta["settings"].get("supernet")
    if not file:
        raise ValueError(f"{run.path / 'search.json'}: names no supernet checkpoint")
    path = Path(file)
    if path.is_dir():
        path = path / "checkpoint_last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the supernet checkpoint of search {run.path} is gone")
    return path, identity.get("sha256")


def _scores(run: SearchRun, row: pd.Series, rule: str, weights: str) -> dict[str, Any]:
    skip = {"config", *OPERATIONAL_COLUMNS}
    out = {k: _plain(v) for k, v in row.items() if k not in skip}
    settings = run.meta["settings"]
    out.update({
        "pick": rule,
        "search_run": str(run.path.resolve()),
        "objectives": list(settings["objectives"]),
        "constraints": list(settings.get("constraints", [])),
        "latency_device": out.get("latency_device"),
        "protocols": run.meta.get("protocols", {}),
        "scoring": {"data": run.meta.get("data", settings.get("data")), "split": "valid",
                    "dev_sentences": settings.get("dev_sentences"),
                    "beam": settings.get("beam"),
                    "bleu": "sacreBLEU of the supernet's inherited weights on the first "
                            "dev_sentences of the valid split; loss label-smoothed per token"},
        "supernet": run.meta.get("supernet", {}),
        "weights": weights,
        "comparisons": _comparisons(run.path, str(row["key"])),
    })
    return out


def _comparisons(run: Path, key: str) -> list[dict[str, Any]]:
    """The paired tests of `key` against each baseline (``comparisons.csv``: dev loss, BLEU,
    chrF, their differences with 95% intervals and p-values); [] when the run has none or
    `key` is not on its front."""
    path = run / "comparisons.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"key": str, "baseline_key": str})
    rows = table[table["key"] == key]
    return [{k: _plain(v) for k, v in r.items()} for _, r in rows.iterrows()]


def export_subnet(run_dir: str | Path, out: str | Path, *, pick: str = DEFAULT_PICK,
                  overwrite: bool = False, onnx: bool = False,
                  task: str | None = None) -> ExportResult:
    """Writes the candidate of search ``run_dir`` that ``pick`` selects into ``out``; with
    ``onnx``, its ONNX graphs too, into ``out/onnx`` (`automoe.onnx_export`). With ``task``
    (a target language of a multilingual data dir) only what that task uses: every
    task-routed layer becomes one dense FFN (`supernet.task_extract.for_task`); then
    ``subnet.json`` is that served config and config.json's ``extra`` names the task.

    Every check (run dir, output dir, pick rule, checkpoint identity, tokenizer) runs before
    anything is written; ``out`` appears complete or not at all.
    """

    if onnx:
        from automoe.onnx_export import require_onnx

        require_onnx()
    run = read_run(run_dir, need_objectives=True)
    out = Path(out)
    _check_out(out, run.path, overwrite)
    source = str(run.path)
    key = select_key(run.candidates, run.front, run.objectives, pick, source=source)
    rows = run.candidates[run.candidates["key"] == key]
    if rows.empty:
        raise ValueError(f"{run.path / 'pareto.csv'}: key {key} is not in candidates.csv")
    row = rows.iloc[0]
    config = SubnetConfig.from_json(str(row["config"]), source=f"{run.path / 'candidates.csv'} "
                                                               f"(key {key})")
    if config.key() != key:
        raise ValueError(f"{run.path / 'candidates.csv'}: row {key} holds a config whose key is "
                         f"{config.key()} (edited table?)")
    checkpoint, sha = _supernet_file(run)
    if sha is not None and file_sha256(checkpoint) != sha:
        raise ValueError(f"{checkpoint}: changed since search {run.path} scored it (sha256 "
                         f"{sha[:12]}... in search.json); the inherited weights would not be "
                         "the ones scored")
    data = Path(run.meta.get("data") or run.meta["settings"]["data"])
    tokenizer = Tokenizer.load(data / "spm.model")
    supernet, space = load_supernet(checkpoint)
    searched = run.meta["settings"].get("space")
    if searched is not None:  # a search over a precision variant of the supernet's space

        variant = load_space(searched)
        check_precision_variant(space, variant, source=f"{run.path / 'search.json'}: space "
                                                       f"{searched}")
        space = variant
    space.validate(config, source=f"candidate {key}")
    if tokenizer.vocab_size != supernet.vocab_size:
        raise ValueError(f"{data / 'spm.model'}: {tokenizer.vocab_size} entries, the supernet "
                         f"{checkpoint} has {supernet.vocab_size}")
    model = supernet.extract(config).eval()
    weights = f"inherited from supernet {checkpoint.resolve()} (not retrained)"
    scores = _scores(run, row, pick, weights)
    extra = {"search_run": scores["search_run"], "key": key, "pick": pick,
             "supernet_checkpoint": str(checkpoint.resolve()), "supernet_sha256": sha,
             "weights": weights}
    if task is not None:

        model = for_task(model, tokenizer.task_id(task), name=task)
        config = model.config
        extra.update(task=task, served_key=config.key())
        scores.update(task=task, served_config=config.to_dict(),
                      served_note="the scores are the routed model's over all tasks; the "
                                  "served config computes the same on this task")
    with atomic_dir(out, overwrite=True) as tmp:
        model.save(tmp, overwrite=True, extra=extra)
        shutil.copyfile(data / "spm.model", tmp / "spm.model")
        (tmp / "subnet.json").write_text(config.to_json(indent=2) + "\n", encoding="utf-8")
        atomic_write_json(tmp / "scores.json", scores)
        files = [out / f for f in SUBNET_FILES]
        if onnx:
            from automoe.onnx_export import ONNX_DIR, ONNX_FILES, export_onnx

            export_onnx(model, tmp / ONNX_DIR, overwrite=True)
            files += [out / ONNX_DIR / f for f in ONNX_FILES]
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model dir is meant to be shared
    return ExportResult(out, key, pick, tuple(files), scores)


def write_task_model(model_dir: str | Path, task: str, out: str | Path, *,
                     data_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Writes the model that serves ``task`` alone (`supernet.task_extract.for_task`) of the
    task-routed model dir ``model_dir`` into ``out`` (config.json + weights + spm.model),
    atomically; config.json's ``extra`` names the task and the source dir."""

    subnet = load_subnet(model_dir, data_dir=data_dir)
    if subnet.task is not None:
        raise ValueError(f"{model_dir}: already the model of task {subnet.task!r}")
    out = Path(out)
    _check_out(out, Path(model_dir), overwrite, what="model dir",
               owned=("config.json", "model.safetensors", "spm.model", "onnx"),
               marker=("config.json",), writer="automoe subnet task")
    model = for_task(subnet.model, subnet.tokenizer.task_id(task), name=task)
    extra = dict(read_json(Path(model_dir) / "config.json").get("extra") or {})
    extra.update(task=task, task_of=str(Path(model_dir).resolve()),
                 routed_key=subnet.config.key())
    with atomic_dir(out, overwrite=True) as tmp:
        model.save(tmp, overwrite=True, extra=extra)
        subnet.tokenizer.save(tmp / "spm.model")
    return out


# ---- load -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ExportedSubnet:
    """A model dir loaded for use (`load_subnet`).

    Attributes:
        model: the static `supernet.Transformer`, eval mode, on ``device``; with
            ``runtime="onnxruntime"`` an `automoe.onnx_runtime.OrtTransformer`.
        tokenizer: its `automoe.data.Tokenizer`.
        config: its `SubnetConfig`.
        scores: ``scores.json`` ({} for a model dir without one, e.g. a retrained model).
        path: the directory.
        device: where the model lives.
    """

    model: Transformer
    tokenizer: Tokenizer
    config: SubnetConfig
    scores: dict[str, Any]
    path: Path
    device: str
    task: str | None = None

    def translate(self, texts: Sequence[str], *, beam: int = 4, lenpen: float = 0.6,
                  task: str | None = None, **kwargs: Any) -> list[str]:
        """Translations of ``texts`` (one sentence each) into ``task`` (a multilingual
        model's target language; default: the one it was exported for); more keyword
        arguments (max_len_a, max_len_b, max_tokens, ...) go to
        `automoe.decoding.translate_ids`."""

        if isinstance(texts, str):
            raise ValueError("translate() takes a list of sentences, got one str")
        if task is not None and self.task is not None and task != self.task:
            raise ValueError(f"{self.path}: exported for task {self.task!r} only (its "
                             f"task-routed layers are that task's experts), not {task!r}")
        kwargs.setdefault("device", self.device)
        return translate_texts(self.model, self.tokenizer, list(texts), beam=beam,
                               lenpen=lenpen, task=task or self.task, **kwargs)


RUNTIMES = ("torch", "onnxruntime")


def load_subnet(path: str | Path, device: str = "cpu", *,
                data_dir: str | Path | None = None, runtime: str = "torch") -> ExportedSubnet:
    """Loads a model dir written by `export_subnet` (or any `Transformer.save` dir) with its
    tokenizer: the dir's ``spm.model``, else that of ``data_dir`` (the prepared data dir the
    model was trained on). ``runtime="onnxruntime"`` runs its ``onnx/`` graphs instead
    (`automoe.onnx_runtime.OrtTransformer`; CUDA provider when ``device`` is cuda).
    ValueError/FileNotFoundError naming the file when it is bad."""

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such model directory (written by automoe export)")
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root / 'config.json'} does not exist: a model directory is "
                                "written by Transformer.save / automoe export")
    spm = root / "spm.model"
    if not spm.is_file():
        if data_dir is None:
            raise FileNotFoundError(f"{root} has no spm.model; pass --data DIR (data_dir= in "
                                    "Python), the data dir the model was trained on, to use "
                                    "its tokenizer")
        spm = Path(data_dir) / "spm.model"
    tokenizer = Tokenizer.load(spm)
    if runtime == "torch":
        model = Transformer.load(root, device=device).eval()
        config = model.config
    else:
        from automoe.onnx_export import ONNX_DIR
        from automoe.onnx_runtime import OrtTransformer

        config = read_model_config(root)[0]
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                     if str(device).startswith("cuda") else ["CPUExecutionProvider"])
        model = OrtTransformer(root / ONNX_DIR, providers=providers, config=config,
                               config_file=root / "config.json")
        device = "cpu"  # the graphs take and return CPU tensors
    if model.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{root}: the model's vocabulary has {model.vocab_size} entries, "
                         f"{spm} {tokenizer.vocab_size}")
    scores: dict[str, Any] = {}
    if (root / "scores.json").is_file():
        scores = read_json(root / "scores.json")
    task = read_json(root / "config.json").get("extra", {}).get("task")
    if task is not None and not isinstance(task, str):
        raise ValueError(f"{root / 'config.json'}: 'extra.task' must be a string, got {task!r}")
    return ExportedSubnet(model, tokenizer, config, scores, root, str(device), task)
