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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automoe.io_utils import read_json

__all__ = ["META_FILE", "FORMAT", "Ragged", "RaggedWriter", "SplitData", "load_split",
           "read_meta", "ragged_paths", "reference_path"]

META_FILE = "meta.json"
FORMAT = "automoe-data-v2"
_READABLE = (FORMAT, "automoe-data-v1")  # v1: no {split}.ref.txt (see SplitData.references)
SIDES = ("src", "tgt")


def ragged_paths(root: Path, split: str, side: str) -> tuple[Path, Path]:
    return root / f"{split}.{side}.npy", root / f"{split}.{side}.idx.npy"


def reference_path(root: Path, split: str) -> Path:
    """The target lines of a valid/test split as the user gave them, one per line."""
    return root / f"{split}.ref.txt"


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
    """One split of a prepared data dir: memory-mapped ids and, for valid/test, the text."""

    name: str
    src: Ragged
    tgt: Ragged
    root: Path

    def __len__(self) -> int:
        return len(self.src)

    def texts(self, side: str) -> list[str]:
        """The cleaned sentences of one side ("src" or "tgt"); only valid/test keep them."""
        path = self.root / f"{self.name}.{side}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: only valid/test keep their text")
        return _read_lines(path)

    def references(self) -> list[str]:
        """The references every BLEU/chrF score is computed against: the target lines of
        this split exactly as the user's files (or the built-in corpus) gave them, not the
        cleaned text, so scores compare with sacreBLEU on the original references. Pairs
        that cleaning left empty are not part of the split.

        A data dir of format v1 has no such file: its cleaned targets are returned with a
        warning (scores then differ from sacreBLEU on the original references)."""
        path = reference_path(self.root, self.name)
        if path.is_file():
            refs = _read_lines(path)
            if len(refs) != len(self):
                raise ValueError(f"{path} has {len(refs)} lines, expected {len(self)} "
                                 f"(one per {self.name} pair)")
            return refs
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
    data = SplitData(split, Ragged.load(root, split, "src"), Ragged.load(root, split, "tgt"),
                     root)
    if len(data.src) != len(data.tgt) or len(data.src) != meta["splits"][split]["pairs"]:
        raise ValueError(f"{root}: split {split} has {len(data.src)} source and "
                         f"{len(data.tgt)} target sentences, meta.json says "
                         f"{meta['splits'][split]['pairs']}")
    return data
