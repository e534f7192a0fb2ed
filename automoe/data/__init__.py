"""Data: built-in corpora and user files -> cleaned pairs -> joint SentencePiece -> memory-
mapped token ids -> token-budget batches. See docs/data.md.

    from automoe.data import make_source, prepare, load_split, TokenBatcher, Tokenizer
    prepare("data/ding", make_source(corpus="ding-en-de"))
    train = load_split("data/ding", "train")
    for batch in TokenBatcher(train.src, train.tgt, max_tokens=4096, seed=1,
                              tasks=train.tasks):
        batch.src, batch.prev, batch.target, batch.ids, batch.tasks  # tasks: None if monolingual

The batching names (`Batch`, `TokenBatcher`, `collate`) are imported on first use: they
need torch, the rest does not.
"""

from __future__ import annotations

import importlib
from typing import Any

from automoe.data.clean import FilterOptions, filter_pairs, normalize_text
from automoe.data.corpora import BUILTIN_CORPORA
from automoe.data.fetch import FetchError, cache_root
from automoe.data.prepare import PrepareOptions, PrepareResult, make_source, prepare
from automoe.data.store import Ragged, SplitData, load_split, read_meta, task_names, task_tag
from automoe.data.tokenizer import Tokenizer, train_tokenizer

_TORCH_NAMES = ("Batch", "TokenBatcher", "collate")

__all__ = [
    "BUILTIN_CORPORA", "Batch", "FetchError", "FilterOptions", "PrepareOptions", "PrepareResult",
    "Ragged", "SplitData", "TokenBatcher", "Tokenizer", "cache_root", "collate", "filter_pairs",
    "load_split", "make_source", "normalize_text", "prepare", "read_meta", "task_names",
    "task_tag", "train_tokenizer",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module("automoe.data.batching"), name)
    raise AttributeError(f"module 'automoe.data' has no attribute {name!r}")
