"""Text clean-up for parallel corpora: normalisation of one sentence, then pair filters.

`normalize_text` fixes what the built-in corpora need (typographic and backtick quotes,
verse markers, editorial brackets, stray markup) and is applied to every split, so the
references BLEU is computed against went through the same normalisation as the training
text. `filter_pairs` drops empty pairs, duplicates, over-long sentences and pairs whose
length ratio says they are not translations of each other; it is applied to the training
split only (valid/test keep every non-empty pair so scores stay comparable).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["normalize_text", "FilterOptions", "FilterStats", "filter_pairs"]

# Double quotes of every style become '"', single quotes and the WEB Bible's backtick
# apostrophe (God`s) become "'": one spelling per mark keeps the joint vocabulary small.
_QUOTES = str.maketrans({
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2039": "'", "\u203a": "'", "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "`": "'", "\u00b4": "'",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
})
_VERSE_MARK = re.compile(r"\*\s*\*\s*\*|\*+|#")  # Elberfelder "* * *", BBE "***", Darby "#"
_VERSE_REF = re.compile(r"\(\d+:\d+\)")  # "(9:1)" verse numbers inside Psalm verses
_EMPTY_BRACKETS = re.compile(r"\[\s*\]")  # the 16 empty BBE verses are "[]"
_EDITORIAL = re.compile(r"[\[\]]")  # words added by translators: keep the words, drop [ ]
_MARKUP = re.compile(r"<[^<>]{0,40}>")  # stray tags / Ding's <variant> notes
_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f\u200b-\u200d\ufeff]")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_MIN_RATIO_CHARS = 16


def normalize_text(text: str) -> str:
    """One sentence, cleaned: NFC, unified quote marks, no verse/markup marks, single spaces."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text).translate(_QUOTES)
    text = _EMPTY_BRACKETS.sub(" ", text)
    text = _VERSE_REF.sub(" ", text)
    text = _VERSE_MARK.sub(" ", text)
    text = _MARKUP.sub(" ", text)
    text = _EDITORIAL.sub("", text)
    text = _SPACE.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


@dataclass(frozen=True)
class FilterOptions:
    """Training-pair filters.

    Attributes:
        max_words: drop a pair if either side has more whitespace words (0 = no limit).
        max_ratio: drop a pair if len(longer) / len(shorter), in characters, exceeds this
            (0 = no limit); catches misalignments and truncated verses.
        dedup: drop exact duplicate pairs (the first occurrence is kept).
    """

    max_words: int = 80
    max_ratio: float = 2.5
    dedup: bool = True

    def __post_init__(self) -> None:
        if self.max_words < 0:
            raise ValueError(f"max_words must be >= 0, got {self.max_words}")
        if self.max_ratio != 0 and self.max_ratio < 1:
            raise ValueError(f"max_ratio must be 0 (off) or >= 1, got {self.max_ratio}")


@dataclass
class FilterStats:
    """How many pairs each filter removed (the first filter that matched counts)."""

    kept: int = 0
    empty: int = 0
    duplicate: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {"kept": self.kept, "empty": self.empty, "duplicate": self.duplicate,
                "too_long": self.too_long, "bad_ratio": self.bad_ratio, **self.extra}


def filter_pairs(
    pairs: Iterable[tuple[str, ...]], options: FilterOptions, stats: FilterStats | None = None
) -> Iterator[tuple[str, ...]]:
    """Yields the pairs that pass every filter, in input order; counts drops in `stats`.

    A pair is ``(src, tgt)`` or ``(src, tgt, *extra)`` (a task's language): the extra fields
    ride along and are part of the duplicate key, so one sentence pair may occur once per task.
    """
    stats = stats if stats is not None else FilterStats()
    seen: set[int] = set()
    for pair in pairs:
        src, tgt = pair[0], pair[1]
        if not src or not tgt:
            stats.empty += 1
            continue
        if options.dedup:
            key = hash(tuple(pair))
            if key in seen:
                stats.duplicate += 1
                continue
            seen.add(key)
        if options.max_words and max(src.count(" "), tgt.count(" ")) + 1 > options.max_words:
            stats.too_long += 1
            continue
        if options.max_ratio:
            a, b = len(src), len(tgt)
            # Very short pairs ("Ja." / "Yes, indeed.") are left alone: ratios there are noise.
            if max(a, b) >= _MIN_RATIO_CHARS and max(a, b) > options.max_ratio * min(a, b):
                stats.bad_ratio += 1
                continue
        stats.kept += 1
        yield pair
