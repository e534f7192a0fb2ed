"""`prepare`: clean a parallel corpus, train the joint tokenizer, store memory-mapped ids.

A data dir holds ``meta.json`` (counts, options, tokenizer, the input hash), ``spm.model``,
and per split ``{split}.{src,tgt}.npy`` + ``.idx.npy`` (see `automoe.data.store`), plus the
cleaned text of valid/test and their target lines unmodified (``{split}.ref.txt``, the BLEU
references: cleaning changes what the model reads, never what it is scored against). It is
built in a temporary folder and renamed into place, so a failure leaves no half-written dir; preparing again with the same inputs and options is a
no-op (the input hash covers the files' SHA-256, the package version and every option).

Streaming: training pairs go through clean-up to a temporary TSV and are encoded chunk by
chunk, so a multi-million-pair corpus never becomes Python lists of ids.

Multilingual sources (`Source.tasks`, e.g. ``bible-en-x``) give format ``automoe-data-v3``:
the joint tokenizer holds one user symbol ``<2xx>`` per target language, every stored source
sentence starts with its tag's id, ``{split}.task.npy`` holds the pairs' task ids and
meta.json adds ``tasks``, ``task_tags`` and per split ``task_pairs``. Monolingual sources
give exactly the v2 dir they always did (same files, meta.json and input hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from automoe.data.clean import FilterOptions, FilterStats, filter_pairs, normalize_text
from automoe.data.sources import (
    SPLITS,
    CorpusSource,
    FilesSource,
    Source,
    TaskFilesSource,
    TsvSource,
)
from automoe.data.store import (
    FORMAT,
    FORMAT_TASKS,
    META_FILE,
    RaggedWriter,
    read_meta,
    reference_path,
    task_path,
    task_tag,
)
from automoe.data.tokenizer import Tokenizer, train_tokenizer
from automoe.io_utils import atomic_dir, atomic_write_json, atomic_write_text
from search_spaces.checks import check_ints
from supernet.tokens import BOS_ID, DEFAULT_VOCAB_SIZE, EOS_ID, PAD_ID, UNK_ID

__all__ = ["PrepareOptions", "PrepareResult", "prepare", "make_source"]

_CHUNK = 20_000


@dataclass(frozen=True)
class PrepareOptions:
    """How a corpus is turned into ids.

    Attributes:
        vocab_size: joint SentencePiece BPE vocabulary size (specials included).
        max_words: training pairs with more whitespace words on either side are dropped.
        max_ratio: training pairs whose character-length ratio exceeds this are dropped.
        max_len: training pairs with more than max_len - 1 subwords on either side (so that
            with EOS / BOS added they exceed max_len) are dropped; 0 = no limit.
        dedup: drop duplicate training pairs.
        spm_max_sentences: at most this many sentences (both sides) train SentencePiece
            (an evenly spaced, deterministic subsample of a larger corpus).
    """

    vocab_size: int = DEFAULT_VOCAB_SIZE
    max_words: int = 80
    max_ratio: float = 2.5
    max_len: int = 128
    dedup: bool = True
    spm_max_sentences: int = 2_000_000

    def __post_init__(self) -> None:
        check_ints("PrepareOptions", self, {"vocab_size": 0, "max_words": 0, "max_len": 0,
                                            "spm_max_sentences": 0})
        FilterOptions(self.max_words, self.max_ratio, self.dedup)  # validates


@dataclass(frozen=True)
class PrepareResult:
    path: Path
    meta: dict
    rebuilt: bool


def make_source(*, corpus: str | None = None, files: dict | None = None,
                tsv: str | os.PathLike | None = None, src_lang: str | None = None,
                tgt_lang: str | None = None, valid_frac: float = 0.05, test_frac: float = 0.05,
                cache: str | os.PathLike | None = None, verbose: bool = True,
                targets: Sequence[str] | None = None) -> Source:
    """One Source from exactly one of: a built-in corpus name, per-split files, a TSV.

    `targets` (target languages) makes it multilingual: a multi-target corpus's targets
    (``bible-en-x``, default de, fr, es); with `files`, ``{split: [(src, tgt) per target]}``;
    with `tsv`, a third column names each line's target language.
    """
    given = [k for k, v in (("--corpus", corpus), ("--train/--valid/--test", files),
                            ("--tsv", tsv)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one of --corpus NAME, --train/--valid/--test SRC TGT, "
                         f"or --tsv FILE (got {', '.join(given) or 'none'})")
    for name, frac in (("valid_frac", valid_frac), ("test_frac", test_frac)):
        if not 0 < frac < 0.5:
            raise ValueError(f"{name} must be in (0, 0.5), got {frac}")
    if corpus:
        if src_lang or tgt_lang:
            raise ValueError("--src-lang/--tgt-lang are fixed by a built-in corpus's name")
        return CorpusSource(corpus, cache=None if cache is None else Path(cache),
                            valid_frac=valid_frac, test_frac=test_frac, verbose=verbose,
                            targets=None if targets is None else tuple(targets))
    if targets is not None:
        if tgt_lang:
            raise ValueError("--tgt-lang names one target language; with --targets each pair's "
                             "target language is its task")
        if files:
            return TaskFilesSource(files, tuple(targets), src_lang=src_lang or "src")
        assert tsv is not None  # exactly one of corpus, files, tsv was checked above
        return TsvSource(Path(tsv), src_lang=src_lang or "src", tgt_lang="x",
                         valid_frac=valid_frac, test_frac=test_frac, tasks=tuple(targets))
    src_lang, tgt_lang = src_lang or "src", tgt_lang or "tgt"
    if files:
        return FilesSource(files, src_lang=src_lang, tgt_lang=tgt_lang)
    assert tsv is not None  # exactly one of corpus, files, tsv was checked above
    return TsvSource(Path(tsv), src_lang=src_lang, tgt_lang=tgt_lang, valid_frac=valid_frac,
                     test_frac=test_frac)


def _version() -> str:
    try:
        return importlib.metadata.version("automoe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _input_hash(fingerprint: dict, options: PrepareOptions, fmt: str = FORMAT) -> str:
    blob = json.dumps({"format": fmt, "source": fingerprint,
                       "options": dataclasses.asdict(options)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _existing_meta(out: Path) -> dict | None:
    """The meta of a prepared dir at `out`; None if absent or empty; refuses anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return None
    if not (out / META_FILE).is_file():
        raise ValueError(f"{out} exists, is not empty and holds no {META_FILE}: refusing to "
                         "replace it; choose a new --out")
    try:
        return read_meta(out)
    except ValueError as err:
        raise ValueError(f"{out} is not an automoe data dir ({err}); choose a new --out") from err


def prepare(out_dir: str | os.PathLike, source: Source,
            options: PrepareOptions = PrepareOptions(), *, force: bool = False,
            verbose: bool = True) -> PrepareResult:
    """Builds (or confirms up to date) the data dir `out_dir` from `source`."""
    out = Path(out_dir)
    existing = _existing_meta(out)
    fingerprint = source.fingerprint  # hashes the input files: compute once
    fmt = FORMAT_TASKS if source.tasks else FORMAT
    input_hash = _input_hash(fingerprint, options, fmt)
    if existing is not None and existing.get("input_hash") == input_hash and not force:
        return PrepareResult(out, existing, rebuilt=False)
    with atomic_dir(out, overwrite=True) as tmp:
        meta = _build(tmp, source, options, verbose=verbose)
        meta = {"format": fmt, "created_by": f"automoe {_version()}",
                "input_hash": input_hash, "name": source.name, "src_lang": source.src_lang,
                "tgt_lang": source.tgt_lang, "source": fingerprint,
                "options": dataclasses.asdict(options), **meta}
        atomic_write_json(tmp / META_FILE, meta)
        _default_permissions(tmp)
    return PrepareResult(out, meta, rebuilt=True)


def _default_permissions(root: Path) -> None:
    """Temporary files are created private (0600/0700); give the dir the umask's modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for path in root.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _pairs(source: Source, split: str) -> Iterator[tuple[str, ...]]:
    """(src, tgt) pairs of a monolingual source; (src, tgt, task) of a multilingual one."""
    return source.task_pairs(split) if source.tasks else source.pairs(split)


def _normalized(pairs: Iterator[tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    for a, b, *task in pairs:
        yield normalize_text(a), normalize_text(b), *task


def _build(tmp: Path, source: Source, options: PrepareOptions, *, verbose: bool) -> dict:
    say = (lambda msg: print(f"automoe: {msg}", file=sys.stderr, flush=True)) if verbose \
        else (lambda msg: None)
    tasks = source.tasks
    cleaning: dict[str, dict] = {}
    held_out: dict[str, list[tuple[str, ...]]] = {}
    references: dict[str, list[str]] = {}
    for split in ("valid", "test"):
        raw = list(_pairs(source, split))
        cleaned = list(_normalized(iter(raw)))
        keep = [i for i, (a, b, *_) in enumerate(cleaned) if a and b]
        kept = [cleaned[i] for i in keep]
        if not kept:
            raise ValueError(f"{source.name}: split {split} has no non-empty sentence pair")
        absent = [t for t in tasks if not any(p[2] == t for p in kept)]
        if absent:  # its dev/test scores would be undefined
            raise ValueError(f"{source.name}: split {split} has no non-empty sentence pair of "
                             f"target language {', '.join(map(repr, absent))}")
        held_out[split] = kept
        references[split] = [raw[i][1] for i in keep]
        cleaning[split] = {"kept": len(kept), "empty": len(raw) - len(kept)}
    held_out_src = {p[0] for pairs in held_out.values() for p in pairs}  # in every task

    say(f"cleaning the training pairs of {source.name}")
    stats = FilterStats(extra={"in_valid_or_test": 0})
    train_tsv = tmp / "train.clean.tsv"
    n_train = 0
    with open(train_tsv, "w", encoding="utf-8") as fh:
        filt = FilterOptions(options.max_words, options.max_ratio, options.dedup)
        for pair in filter_pairs(_normalized(_pairs(source, "train")), filt, stats):
            if pair[0] in held_out_src:  # the same source sentence must not be trained on
                stats.extra["in_valid_or_test"] += 1
                stats.kept -= 1
                continue
            fh.write("\t".join(pair) + "\n")  # src, tgt (, task)
            n_train += 1
    if n_train == 0:
        raise ValueError(f"{source.name}: no training pair left after cleaning "
                         f"({stats.as_dict()})")

    say(f"training a joint SentencePiece BPE model (vocab {options.vocab_size}) "
        f"on {n_train} pairs")
    stride = max(1, -(-2 * n_train // max(options.spm_max_sentences, 2)))
    tokenizer = train_tokenizer(_spm_sentences(train_tsv, stride, once=bool(tasks)),
                                vocab_size=options.vocab_size,
                                user_symbols=[task_tag(t) for t in tasks])
    tokenizer.save(tmp / "spm.model")
    tags = [tokenizer.piece_id(task_tag(t)) for t in tasks]  # by task id
    if tokenizer.vocab_size < options.vocab_size:  # SentencePiece stops where the corpus ends
        say(f"note: the corpus supports a vocabulary of {tokenizer.vocab_size}, not the "
            f"{options.vocab_size} asked (--vocab-size); meta.json records both")

    splits = {"train": _encode_train(tmp, train_tsv, tokenizer, options, stats, n_train,
                                     tasks, tags, verbose=verbose)}
    train_tsv.unlink()
    cleaning["train"] = stats.as_dict()
    for split, pairs in held_out.items():
        splits[split] = _encode_pairs(tmp, split, pairs, tokenizer, tasks, tags)
        for side, idx in (("src", 0), ("tgt", 1)):
            atomic_write_text(tmp / f"{split}.{side}.txt", "".join(p[idx] + "\n" for p in pairs))
        atomic_write_text(reference_path(tmp, split), "".join(r + "\n" for r in references[split]))
    say("done: " + ", ".join(f"{s} {splits[s]['pairs']} pairs" for s in SPLITS))
    task_meta = {"tasks": list(tasks), "task_tags": dict(zip(tasks, tags, strict=True))} \
        if tasks else {}
    return {**task_meta, "tokenizer": {"type": "sentencepiece-bpe", "file": "spm.model",
                          "vocab_size": tokenizer.vocab_size,
                          "vocab_size_requested": options.vocab_size,
                          "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID,
                                          "eos": EOS_ID}},
            "vocab_size": tokenizer.vocab_size,
            "splits": {s: splits[s] for s in SPLITS},
            "cleaning": {s: cleaning[s] for s in SPLITS}}


def _spm_sentences(train_tsv: Path, stride: int, *, once: bool = False) -> Iterator[str]:
    """Every `stride`-th training pair's two sides; with `once` (multilingual: a source has
    a pair per target language) each distinct source sentence only the first time."""
    seen: set[int] = set()
    with open(train_tsv, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i % stride == 0:
                a, b = line.rstrip("\n").split("\t")[:2]
                if once and hash(a) in seen:
                    yield b
                    continue
                if once:
                    seen.add(hash(a))
                yield a
                yield b


class _SplitStats:
    """Counts of one split; with `tasks`, also the pairs per task (``task_pairs``)."""

    def __init__(self, tasks: Sequence[str] = ()) -> None:
        self.pairs = 0
        self.tokens = {"src": 0, "tgt": 0}
        self.max_len = {"src": 0, "tgt": 0}
        self.unk = 0
        self.tasks = tuple(tasks)
        self.task_pairs = np.zeros(len(self.tasks), dtype=np.int64)
        self.task_ids: list[np.ndarray] = []  # [chunk] int16, in split order

    def add(self, src: list[list[int]], tgt: list[list[int]],
            task_ids: Sequence[int] = ()) -> None:
        self.pairs += len(src)
        for side, seqs in (("src", src), ("tgt", tgt)):
            self.tokens[side] += sum(len(s) for s in seqs)
            self.max_len[side] = max([self.max_len[side], *(len(s) for s in seqs)])
            self.unk += sum(s.count(UNK_ID) for s in seqs)
        if self.tasks:
            ids = np.asarray(task_ids, dtype=np.int16)
            assert len(ids) == len(src), "one task id per pair"
            self.task_pairs += np.bincount(ids, minlength=len(self.tasks))
            self.task_ids.append(ids)

    def save_tasks(self, tmp: Path, split: str) -> None:
        """Writes ``{split}.task.npy`` (int16 [n]) of a multilingual split."""
        if self.tasks:
            ids = np.concatenate(self.task_ids) if self.task_ids else np.zeros(0, np.int16)
            np.save(task_path(tmp, split), ids)

    def as_dict(self) -> dict:
        total = self.tokens["src"] + self.tokens["tgt"]
        out: dict[str, Any] = {
            "pairs": self.pairs, "src_tokens": self.tokens["src"],
            "tgt_tokens": self.tokens["tgt"], "src_max_len": self.max_len["src"],
            "tgt_max_len": self.max_len["tgt"],
            "unk_rate": round(self.unk / total, 6) if total else 0.0}
        if self.tasks:
            out["task_pairs"] = {t: int(n) for t, n in zip(self.tasks, self.task_pairs,
                                                           strict=True)}
        return out


def _encode(tok: Tokenizer, pairs: Sequence[tuple[str, ...]], tasks: Sequence[str],
            tags: Sequence[int]) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Source ids (led by the task's tag id when multilingual), target ids and task ids."""
    src = tok.encode_batch([p[0] for p in pairs])
    tgt = tok.encode_batch([p[1] for p in pairs])
    if not tasks:
        return src, tgt, []
    index = {t: i for i, t in enumerate(tasks)}
    task_ids = [index[p[2]] for p in pairs]
    return [[tags[t], *ids] for t, ids in zip(task_ids, src, strict=True)], tgt, task_ids


def _encode_train(tmp: Path, train_tsv: Path, tok: Tokenizer, options: PrepareOptions,
                  stats: FilterStats, n_train: int, tasks: Sequence[str], tags: Sequence[int],
                  *, verbose: bool) -> dict:
    writers = {side: RaggedWriter(tmp, "train", side) for side in ("src", "tgt")}
    split_stats = _SplitStats(tasks)
    stats.extra["too_long_subwords"] = 0
    limit = options.max_len - 1 if options.max_len else None  # room for EOS / BOS

    def flush(chunk: list[tuple[str, ...]]) -> None:
        src, tgt, task_ids = _encode(tok, chunk, tasks, tags)
        if limit is not None:
            keep = [i for i in range(len(src)) if len(src[i]) <= limit and len(tgt[i]) <= limit]
            stats.extra["too_long_subwords"] += len(src) - len(keep)
            src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
            task_ids = [task_ids[i] for i in keep] if tasks else task_ids
        writers["src"].append(src)
        writers["tgt"].append(tgt)
        split_stats.add(src, tgt, task_ids)

    with open(train_tsv, encoding="utf-8") as fh, tqdm(
            total=n_train, desc="encode train", unit="pair", disable=not verbose,
            file=sys.stderr) as bar:
        chunk: list[tuple[str, ...]] = []
        for line in fh:
            chunk.append(tuple(line.rstrip("\n").split("\t")))
            if len(chunk) == _CHUNK:
                flush(chunk)
                bar.update(len(chunk))
                chunk = []
        flush(chunk)
        bar.update(len(chunk))
    for w in writers.values():
        w.close()
    split_stats.save_tasks(tmp, "train")
    stats.kept = split_stats.pairs
    if split_stats.pairs == 0:
        raise ValueError(f"no training pair is at most max_len={options.max_len} subwords")
    return split_stats.as_dict()


def _encode_pairs(tmp: Path, split: str, pairs: list[tuple[str, ...]], tok: Tokenizer,
                  tasks: Sequence[str], tags: Sequence[int]) -> dict:
    src, tgt, task_ids = _encode(tok, pairs, tasks, tags)
    split_stats = _SplitStats(tasks)
    split_stats.add(src, tgt, task_ids)
    for side, seqs in (("src", src), ("tgt", tgt)):
        writer = RaggedWriter(tmp, split, side)
        writer.append(seqs)
        writer.close()
    split_stats.save_tasks(tmp, split)
    return split_stats.as_dict()
