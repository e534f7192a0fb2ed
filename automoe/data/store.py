"""On-disk token ids: one flat int32 array per split and side plus an offsets array.

``{split}.{side}.npy`` holds every sentence's ids back to back (no specials);
``{split}.{side}.idx.npy`` holds n+1 int64 offsets, so sentence i is
``flat[offsets[i]:offsets[i+1]]``. Both are opened memory-mapped, so a multi-million-pair
corpus costs page cache, not Python objects. Valid/test also keep their cleaned text
(``{split}.{side}.txt``, what the model reads) and the target lines exactly as given
(``{split}.ref.txt``), the references BLEU and chrF are computed against
(`SplitData.references`).

Format ``automoe-data-v2`` added ``{split}.ref.txt``. A ``v1`` dir still loads; scoring it
falls back to the cleaned targets with a warning to re-run ``automoe data prepare``.

Format ``automoe-data-v3`` is a multilingual dir (monolingual dirs stay v2): meta.json names
its ``tasks`` (target languages, list order = task id) and ``task_tags`` (the id of each
task's ``<2xx>`` tag, the first id of every stored source sentence), and each split has
``{split}.task.npy`` (int16 [n], the task id of every pair).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automoe.io_utils import read_json

__all__ = ["META_FILE", "FORMAT", "FORMAT_TASKS", "Ragged", "RaggedWriter", "SplitData",
           "load_split", "read_meta", "ragged_paths", "reference_path", "task_path",
           "task_names", "task_tag", "check_tasks"]

META_FILE = "meta.json"
FORMAT = "automoe-data-v2"  # monolingual; its input hash recipe must never change
FORMAT_TASKS = "automoe-data-v3"  # multilingual: tasks, tags, {split}.task.npy
_READABLE = (FORMAT_TASKS, FORMAT, "automoe-data-v1")  # v1: no {split}.ref.txt
SIDES = ("src", "tgt")
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def ragged_paths(root: Path, split: str, side: str) -> tuple[Path, Path]:
    return root / f"{split}.{side}.npy", root / f"{split}.{side}.idx.npy"


def reference_path(root: Path, split: str) -> Path:
    """The target lines of a valid/test split as the user gave them, one per line."""
    return root / f"{split}.ref.txt"


def task_path(root: Path, split: str) -> Path:
    """int16 [n]: the task id of every pair of a multilingual split."""
    return root / f"{split}.task.npy"


def task_tag(task: str) -> str:
    """The SentencePiece user symbol that starts every source sentence of `task`: ``<2de>``."""
    return f"<2{task}>"


def task_names(meta: dict) -> tuple[str, ...]:
    """A data dir's tasks (target languages) in task-id order; () for a monolingual dir."""
    return tuple(meta.get("tasks", ()))


def check_tasks(tasks: Sequence[str], what: str = "--targets") -> tuple[str, ...]:
    """`tasks` as a tuple, or a ValueError naming `what` and the bad value: at least one,
    no repeats, each a language code (a letter, then letters, digits, "-" or "_")."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"{what}: no target language given")
    for task in tasks:
        if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
            raise ValueError(f"{what}: {task!r} is not a language code (a letter, then up to 31 "
                             "letters, digits, '-' or '_', e.g. de, pt-BR)")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"{what}: {', '.join(repeated)} given more than once")
    if len(tasks) > np.iinfo(np.int16).max:
        raise ValueError(f"{what}: {len(tasks)} target languages, at most "
                         f"{np.iinfo(np.int16).max}")
    return tasks


def _read_lines(path: Path) -> list[str]:
    lines = path.read_bytes().decode("utf-8").split("\n")  # a "\r" inside a line stays
    return lines[:-1] if lines and lines[-1] == "" else lines


class Ragged:
    """A read-only list of int32 id arrays backed by (flat, offsets) arrays."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, *, source: str = "<memory>"):
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat):
            raise ValueError(f"{source}: offsets do not describe the flat array "
                             f"(offsets[-1]={offsets[-1] if len(offsets) else None}, "
                             f"flat has {len(flat)} ids)")
        self.flat = flat
        self.offsets = offsets
        self.source = source

    @classmethod
    def from_lists(cls, seqs: Iterable[Sequence[int] | np.ndarray]) -> Ragged:
        arrays = [np.asarray(s, dtype=np.int32) for s in seqs]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in arrays])
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        return cls(flat.astype(np.int32, copy=False), offsets)

    @classmethod
    def load(cls, root: Path, split: str, side: str) -> Ragged:
        flat_path, idx_path = ragged_paths(root, split, side)
        for p in (flat_path, idx_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist (is {root} a prepared data dir?)")
        return cls(np.load(flat_path, mmap_mode="r"), np.load(idx_path, mmap_mode="r"),
                   source=str(flat_path))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """[n] int64 number of ids per sentence (specials excluded)."""
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> Ragged:
        """Sentences `rows` ([m] indices), in that order, copied into memory."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets[rows], dtype=np.int64)
        lengths = np.asarray(self.offsets[rows + 1], dtype=np.int64) - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # flat index of every kept id: its sentence's start + its position in the sentence
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        flat = np.asarray(self.flat[index], dtype=np.int32)
        return Ragged(flat, offsets, source=self.source)


class RaggedWriter:
    """Appends sentences chunk by chunk to a raw file, then writes the .npy pair.

    Memory stays bounded by one chunk plus the offsets (8 bytes per sentence).
    """

    def __init__(self, root: Path, split: str, side: str):
        self.flat_path, self.idx_path = ragged_paths(root, split, side)
        self._raw = self.flat_path.with_suffix(".raw")
        self._fh = open(self._raw, "wb")  # noqa: SIM115 - closed in close()
        self._lengths: list[np.ndarray] = []
        self.total = 0

    def append(self, seqs: Sequence[Sequence[int]]) -> None:
        if not seqs:
            return
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(lengths.sum()))
        self._fh.write(flat.tobytes())
        self._lengths.append(lengths)
        self.total += int(lengths.sum())

    def close(self) -> int:
        """Writes the .npy files; returns the number of sentences."""
        self._fh.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out = np.lib.format.open_memmap(self.flat_path, mode="w+", dtype=np.int32,
                                        shape=(self.total,))
        if self.total:
            raw = np.memmap(self._raw, dtype=np.int32, mode="r", shape=(self.total,))
            step = 1 << 24
            for start in range(0, self.total, step):
                out[start:start + step] = raw[start:start + step]
            del raw
        out.flush()
        del out
        os.unlink(self._raw)
        np.save(self.idx_path, offsets)
        return len(lengths)


@dataclass(frozen=True)
class SplitData:
    """One split of a prepared data dir: memory-mapped ids and, for valid/test, the text.

    Attributes:
        name: "train", "valid" or "test".
        src, tgt: the pairs' ids; a multilingual source starts with its task's tag id.
        root: the data dir.
        tasks: [n] int64 task id of every pair (an index into `task_names`); None for a
            monolingual dir.
        task_names: the dir's tasks (target languages) in id order; () when monolingual.
        rows: [n] the pairs' line numbers (0-based) in the split's text files when this is a
            subset (`select_task`); None for the whole split.
    """

    name: str
    src: Ragged
    tgt: Ragged
    root: Path
    tasks: np.ndarray | None = None
    task_names: tuple[str, ...] = ()
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.src)

    def select_task(self, task: str) -> SplitData:
        """The pairs of task `task` (a target language) only, in split order: ids, tasks,
        texts and references subset alike (in memory; for per-language dev/test scores)."""
        if self.tasks is None:
            raise ValueError(f"{self.root}: split {self.name} is monolingual; it has no task "
                             f"{task!r}")
        if task not in self.task_names:
            raise ValueError(f"{self.root}: no task {task!r}; it has "
                             f"{', '.join(self.task_names)}")
        keep = np.flatnonzero(self.tasks == self.task_names.index(task))
        rows = keep if self.rows is None else self.rows[keep]
        return SplitData(self.name, self.src.take(keep), self.tgt.take(keep), self.root,
                         tasks=self.tasks[keep], task_names=self.task_names, rows=rows)

    def _lines(self, path: Path) -> list[str]:
        """The lines of one of this split's text files, subset to `rows`: one per pair."""
        lines = _read_lines(path)
        if self.rows is None and len(lines) != len(self):
            raise ValueError(f"{path} has {len(lines)} lines, expected {len(self)} "
                             f"(one per {self.name} pair)")
        if self.rows is None:
            return lines
        if len(self.rows) and int(self.rows.max()) >= len(lines):
            raise ValueError(f"{path} has {len(lines)} lines, expected more than "
                             f"{int(self.rows.max())} (one per {self.name} pair)")
        return [lines[i] for i in self.rows]

    def texts(self, side: str) -> list[str]:
        """The cleaned sentences of one side ("src" or "tgt"); only valid/test keep them.
        A multilingual source is the plain sentence, without its tag."""
        path = self.root / f"{self.name}.{side}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: only valid/test keep their text")
        return self._lines(path)

    def references(self) -> list[str]:
        """The references every BLEU/chrF score is computed against: the target lines of
        this split exactly as the user's files (or the built-in corpus) gave them, not the
        cleaned text, so scores compare with sacreBLEU on the original references. Pairs
        that cleaning left empty are not part of the split.

        A data dir of format v1 has no such file: its cleaned targets are returned with a
        warning (scores then differ from sacreBLEU on the original references)."""
        path = reference_path(self.root, self.name)
        if path.is_file():
            return self._lines(path)
        if self.name == "train":
            raise FileNotFoundError(f"{path} does not exist: only valid/test keep references")
        warnings.warn(f"{self.root} has no {path.name} (prepared by an older automoe): "
                      "scoring against the cleaned targets, which differs from sacreBLEU on "
                      "the original references; re-run `automoe data prepare` to fix",
                      stacklevel=2)
        return self.texts("tgt")


def read_meta(root: str | os.PathLike) -> dict:
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `automoe data prepare` first")
    meta = read_json(path)
    if meta.get("format") not in _READABLE:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected one of "
                         f"{', '.join(map(repr, _READABLE))}")
    return meta


def load_split(root: str | os.PathLike, split: str) -> SplitData:
    """Opens split ("train", "valid" or "test") of a prepared data dir, memory-mapped."""
    root = Path(root)
    meta = read_meta(root)
    if split not in meta["splits"]:
        raise ValueError(f"{root}: no split {split!r}; it has {sorted(meta['splits'])}")
    src, tgt = Ragged.load(root, split, "src"), Ragged.load(root, split, "tgt")
    if len(src) != len(tgt) or len(src) != meta["splits"][split]["pairs"]:
        raise ValueError(f"{root}: split {split} has {len(src)} source and "
                         f"{len(tgt)} target sentences, meta.json says "
                         f"{meta['splits'][split]['pairs']}")
    names = task_names(meta)
    tasks = _load_tasks(root, split, len(src), len(names)) if names else None
    return SplitData(split, src, tgt, root, tasks=tasks, task_names=names)


def _load_tasks(root: Path, split: str, n: int, n_tasks: int) -> np.ndarray:
    """[n] int64 task ids of a multilingual split, checked against meta.json's tasks."""
    path = task_path(root, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist ({root}/{META_FILE} lists tasks)")
    tasks = np.load(path)
    if tasks.shape != (n,) or tasks.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected {n} integer task ids, found {tasks.dtype} "
                         f"{tasks.shape}")
    if n and not (int(tasks.min()) >= 0 and int(tasks.max()) < n_tasks):
        raise ValueError(f"{path}: task ids span {int(tasks.min())}..{int(tasks.max())}, "
                         f"meta.json has {n_tasks} tasks")
    return tasks.astype(np.int64)
