"""automoe.data.prepare / store / tokenizer on small corpora made in the test (no network)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from automoe.cli import main
from automoe.data import (
    PrepareOptions,
    Tokenizer,
    load_split,
    make_source,
    normalize_text,
    prepare,
    read_meta,
    train_tokenizer,
)
from automoe.data.corpora import hash_split
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

WORDS_EN = ["the", "a", "house", "cat", "dog", "sees", "runs", "small", "big", "green", "old", "man", "woman", "child", "eats", "bread"]
WORDS_DE = ["der", "ein", "Haus", "Katze", "Hund", "sieht", "läuft", "klein", "groß", "grün", "alt", "Mann", "Frau", "Kind", "isst", "Brot"]
LEX = dict(zip(WORDS_EN, WORDS_DE, strict=True))


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(WORDS_EN) for _ in range(rng.randint(3, 9))]
        en = " ".join(words).capitalize() + "."
        de = " ".join(LEX[w] for w in words).capitalize() + "."
        pairs.append((en, de))
    return pairs


def write_split(root, split, pairs):
    src, tgt = root / f"{split}.en", root / f"{split}.de"
    src.write_text("".join(a + "\n" for a, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(b + "\n" for _, b in pairs), encoding="utf-8")
    return str(src), str(tgt)


@pytest.fixture()
def corpus_files(tmp_path):
    """Parallel files whose train split holds one of each thing the clean-up must drop."""
    root = tmp_path / "raw"
    root.mkdir()
    valid, test = make_pairs(20, 1), make_pairs(20, 2)
    train = make_pairs(200, 3)
    train += [
        train[0],  # duplicate pair
        ("", "Leer."),  # empty source
        ("Yes the big green old house of the child.", "Ja."),  # length ratio 43:3
        valid[0],  # a valid sentence must not be trained on
        ("The \u201cold\u201d man`s cat.", "Die \u201ealte\u201c Katze."),  # quotes normalized
    ]
    files = {"train": write_split(root, "train", train), "valid": write_split(root, "valid", valid),
             "test": write_split(root, "test", test)}
    return files, train, valid, test


OPTS = PrepareOptions(vocab_size=60, max_len=40)  # drops some pairs: tested


def test_tokenizer_round_trip_and_special_ids():
    text = [s for p in make_pairs(100, 0) for s in p] + ["Größe, Maß und Übel: \"ja\" 'nein'!"]
    tok = train_tokenizer(text, vocab_size=80)
    assert [tok._sp.pad_id(), tok._sp.unk_id(), tok._sp.bos_id(), tok._sp.eos_id()] == [
        PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    for sentence in text:
        ids = tok.encode(sentence)
        assert min(ids) > EOS_ID, "plain encoding must not contain specials"
        assert tok.decode(ids) == sentence
        assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == sentence
    assert UNK_ID in tok.encode("Ж")  # an unseen character maps to UNK
    # Same input, same model (the data dir's hash relies on it).
    assert train_tokenizer(text, vocab_size=80)._proto == tok._proto


def test_prepare_counts_ids_and_cleaning(corpus_files, tmp_path):
    files, train, valid, test = corpus_files
    out = tmp_path / "data"
    result = prepare(out, make_source(files=files, src_lang="en", tgt_lang="de"), OPTS,
                     verbose=False)
    assert result.rebuilt
    meta = read_meta(out)
    assert meta["src_lang"] == "en" and meta["tgt_lang"] == "de"
    assert meta["splits"]["valid"]["pairs"] == 20 and meta["splits"]["test"]["pairs"] == 20
    clean = meta["cleaning"]["train"]
    assert (clean["duplicate"], clean["empty"], clean["bad_ratio"], clean["in_valid_or_test"]) == (
        1, 1, 1, 1)
    # The 200 generated pairs may repeat among themselves or with valid/test, and some exceed
    # max_len subwords with this tiny vocabulary: count what must survive, independently.
    tok = Tokenizer.load(out)
    held_out = {a for a, _ in valid + test}
    survivors = {(normalize_text(a), normalize_text(b)) for a, b in train[:200] + train[-1:]
                 if a not in held_out}
    fits = {p for p in survivors if max(len(tok.encode(p[0])), len(tok.encode(p[1]))) < 40}
    assert 0 < clean["too_long_subwords"] == len(survivors) - len(fits)
    assert meta["splits"]["train"]["pairs"] == clean["kept"] == len(fits)
    assert max(meta["splits"]["train"]["src_max_len"], meta["splits"]["train"]["tgt_max_len"]) < 40

    assert tok.vocab_size == meta["vocab_size"] <= 60
    assert meta["tokenizer"]["vocab_size_requested"] == 60
    for split, pairs in (("valid", valid), ("test", test)):
        data = load_split(out, split)
        assert isinstance(data.src.flat, np.memmap) and data.src.flat.dtype == np.int32
        assert data.texts("src") == [normalize_text(a) for a, _ in pairs]
        assert data.texts("tgt") == [normalize_text(b) for _, b in pairs]
        for i, (a, b) in enumerate(pairs):
            assert data.src[i].tolist() == tok.encode(normalize_text(a))
            assert data.tgt[i].tolist() == tok.encode(normalize_text(b))
    train_data = load_split(out, "train")
    decoded = {(tok.decode(train_data.src[i]), tok.decode(train_data.tgt[i]))
               for i in range(len(train_data))}
    assert decoded == fits
    assert ('The "old" man\'s cat.', 'Die "alte" Katze.') in decoded
    assert normalize_text(valid[0][0]) not in {a for a, _ in decoded}
    assert meta["splits"]["train"]["src_tokens"] == int(train_data.src.lengths.sum())


def test_prepare_is_a_noop_until_an_input_or_option_changes(corpus_files, tmp_path):
    files, *_ = corpus_files
    out = tmp_path / "data"
    first = prepare(out, make_source(files=files), OPTS, verbose=False)
    mtime = (out / "meta.json").stat().st_mtime_ns
    again = prepare(out, make_source(files=files), OPTS, verbose=False)
    assert not again.rebuilt and (out / "meta.json").stat().st_mtime_ns == mtime
    changed = prepare(out, make_source(files=files), PrepareOptions(vocab_size=50, max_len=40),
                      verbose=False)
    assert changed.rebuilt and changed.meta["input_hash"] != first.meta["input_hash"]
    with open(files["test"][0], "a", encoding="utf-8") as fh, \
            open(files["test"][1], "a", encoding="utf-8") as gh:
        fh.write("A new cat.\n")
        gh.write("Eine neue Katze.\n")
    rebuilt = prepare(out, make_source(files=files), PrepareOptions(vocab_size=50, max_len=40),
                      verbose=False)
    assert rebuilt.rebuilt and rebuilt.meta["splits"]["test"]["pairs"] == 21


def test_tsv_hash_split_is_deterministic(tmp_path):
    pairs = make_pairs(400, 5)
    tsv = tmp_path / "all.tsv"
    tsv.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    meta = prepare(tmp_path / "d", make_source(tsv=tsv), OPTS, verbose=False).meta
    unique_src = {normalize_text(a) for a, _ in pairs}
    expect = {s: sum(hash_split(a, valid_frac=0.05, test_frac=0.05) == s for a in unique_src)
              for s in ("valid", "test")}
    test_src = load_split(tmp_path / "d", "test").texts("src")
    assert set(test_src) == {a for a in unique_src if hash_split(
        a, valid_frac=0.05, test_frac=0.05) == "test"}
    assert len(set(test_src)) == expect["test"]
    assert set(test_src).isdisjoint(load_split(tmp_path / "d", "valid").texts("src"))
    assert meta["splits"]["valid"]["pairs"] >= expect["valid"] > 0


def test_cli_prepare_files(corpus_files, tmp_path, capsys):
    files, *_ = corpus_files
    out = tmp_path / "cli"
    args = ["data", "prepare", "--out", str(out), "--vocab-size", "60", "--max-len", "40", "-q",
            "--train", *files["train"], "--valid", *files["valid"], "--test", *files["test"]]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "built" and report["pairs"]["valid"] == 20
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "up to date"


# ---- bad input: a clear error naming the file (and line), exit 2, nothing half-written ------

def _cli_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_different_line_counts(corpus_files, tmp_path, capsys):
    files, *_ = corpus_files
    with open(files["valid"][1], "a", encoding="utf-8") as fh:
        fh.write("Eine Zeile zu viel.\n")
    out = tmp_path / "bad"
    err = _cli_error(["data", "prepare", "--out", str(out), "-q", "--train", *files["train"],
                      "--valid", *files["valid"], "--test", *files["test"]], capsys)
    assert "valid.en has 20 lines" in err and "valid.de has 21" in err
    assert not out.exists() and not list(tmp_path.glob(".bad*"))


def test_bad_input_empty_file_and_non_utf8(corpus_files, tmp_path, capsys):
    files, *_ = corpus_files
    with open(files["test"][0], "w", encoding="utf-8"):
        pass
    common = ["data", "prepare", "--out", str(tmp_path / "bad"), "-q", "--train", *files["train"],
              "--valid", *files["valid"], "--test"]
    err = _cli_error([*common, *files["test"]], capsys)
    assert "test.en is empty" in err
    bad = tmp_path / "latin1.en"
    bad.write_bytes("Ein Satz.\nGr\u00f6\u00dfe\n".encode("latin-1"))
    err = _cli_error([*common, str(bad), files["test"][1]], capsys)
    assert "latin1.en line 2: not valid UTF-8" in err
    assert not (tmp_path / "bad").exists()


def test_bad_input_missing_split_unknown_corpus_bad_tsv(corpus_files, tmp_path, capsys):
    files, *_ = corpus_files
    out = str(tmp_path / "bad")
    err = _cli_error(["data", "prepare", "--out", out, "--train", *files["train"], "--test",
                      *files["test"]], capsys)
    assert "missing split(s) valid" in err
    err = _cli_error(["data", "prepare", "--out", out, "--corpus", "wmt14-en-de"], capsys)
    assert "unknown corpus 'wmt14-en-de'" in err and "ding-en-de" in err
    tsv = tmp_path / "x.tsv"
    tsv.write_text("A cat.\tEine Katze.\nno tab here\n", encoding="utf-8")
    err = _cli_error(["data", "prepare", "--out", out, "--tsv", str(tsv)], capsys)
    assert "x.tsv line 2: expected 'source<TAB>target', found 0 tabs" in err
    err = _cli_error(["data", "prepare", "--out", out, "--train", *files["train"], "--valid",
                      files["valid"][0], str(tmp_path / "nope.de"), "--test", *files["test"]],
                     capsys)
    assert "nope.de does not exist" in err
    assert not (tmp_path / "bad").exists()


def test_refuses_to_replace_a_foreign_directory(corpus_files, tmp_path):
    files, *_ = corpus_files
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="refusing to replace"):
        prepare(foreign, make_source(files=files), OPTS, verbose=False)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_failed_rebuild_keeps_the_previous_build(corpus_files, tmp_path):
    files, *_ = corpus_files
    out = tmp_path / "data"
    before = prepare(out, make_source(files=files), OPTS, verbose=False).meta
    with open(files["train"][0], "ab") as fh:
        fh.write(b"\xff\xfe broken\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        prepare(out, make_source(files=files), OPTS, verbose=False)
    assert read_meta(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]


def test_references_are_the_target_lines_as_given_and_a_v1_dir_falls_back(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    messy = [(a, f"[{b}] \u201e*{b}*\u201c (1:2)") for a, b in make_pairs(20, 2)]
    files = {"train": write_split(root, "train", make_pairs(200, 3)),
             "valid": write_split(root, "valid", make_pairs(20, 1)),
             "test": write_split(root, "test", messy + [("Leer.", "* * *")])}
    out = tmp_path / "data"
    prepare(out, make_source(files=files), OPTS, verbose=False)
    test = load_split(out, "test")
    assert test.references() == [b for _, b in messy]  # "* * *" cleans to empty: dropped
    assert test.texts("tgt") == [normalize_text(b) for _, b in messy] != test.references()
    # an older (v1) dir has no references file: cleaned targets, with a warning
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    (out / "meta.json").write_text(json.dumps({**meta, "format": "automoe-data-v1"}),
                                   encoding="utf-8")
    (out / "test.ref.txt").unlink()
    with pytest.warns(UserWarning, match=r"test\.ref\.txt.*re-run `automoe data prepare`"):
        assert load_split(out, "test").references() == test.texts("tgt")
    (out / "meta.json").write_text(json.dumps({**meta, "format": "automoe-data-v0"}),
                                   encoding="utf-8")
    with pytest.raises(ValueError, match="format 'automoe-data-v0', expected one of"):
        load_split(out, "test")
