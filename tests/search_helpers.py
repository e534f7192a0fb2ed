"""A tiny world for search tests: a prepared data dir of a toy lexicon corpus and a
checkpoint of a `tiny`-space supernet."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

WORDS = {"the": "der", "a": "ein", "house": "Haus", "cat": "Katze", "dog": "Hund",
         "sees": "sieht", "runs": "läuft", "small": "klein", "big": "groß", "old": "alt",
         "man": "Mann", "child": "Kind", "eats": "isst", "bread": "Brot"}


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(sorted(WORDS)) for _ in range(rng.randint(3, 8))]
        out.append((" ".join(words).capitalize() + ".",
                    " ".join(WORDS[w] for w in words).capitalize() + "."))
    return out


def make_data(root: Path) -> Path:
    from automoe.data import PrepareOptions, make_source, prepare

    raw = root / "raw"
    raw.mkdir(parents=True)
    files = {}
    for split, (n, seed) in {"train": (300, 1), "valid": (24, 2), "test": (8, 3)}.items():
        pairs = _pairs(n, seed)
        src, tgt = raw / f"{split}.en", raw / f"{split}.de"
        src.write_text("".join(a + "\n" for a, _ in pairs), encoding="utf-8")
        tgt.write_text("".join(b + "\n" for _, b in pairs), encoding="utf-8")
        files[split] = (str(src), str(tgt))
    out = root / "data"
    prepare(out, make_source(files=files, src_lang="en", tgt_lang="de"),
            PrepareOptions(vocab_size=64, max_len=40), verbose=False)
    return out


FRENCH = {"the": "le", "a": "un", "house": "maison", "cat": "chat", "dog": "chien",
          "sees": "voit", "runs": "court", "small": "petit", "big": "grand", "old": "vieux",
          "man": "homme", "child": "enfant", "eats": "mange", "bread": "pain"}


def make_multilingual_data(root: Path) -> Path:
    """en -> {de, fr} of the toy lexicon, from one TSV with a language column."""
    from automoe.data import PrepareOptions, make_source, prepare

    rows = []
    for en, de in _pairs(240, 7):
        fr = " ".join(FRENCH[w.lower().rstrip(".")] for w in en.split()).capitalize() + "."
        rows += [(en, de, "de"), (en, fr, "fr")]
    tsv = root / "multi.tsv"
    root.mkdir(parents=True, exist_ok=True)
    tsv.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = root / "data"
    prepare(out, make_source(tsv=tsv, targets=("de", "fr"), valid_frac=0.1, test_frac=0.05),
            PrepareOptions(vocab_size=80, max_len=40), verbose=False)
    return out


def make_supernet(root: Path, data: Path, *, space: str = "tiny", seed: int = 0) -> Path:
    """A supernet run dir whose ``checkpoint_last.pt`` has the training loop's format
    (`supernet.training.checkpoint`, the identity `automoe.training.runs.train_supernet` stores)
    and seeded random weights: training it would only cost test time, and every search
    test compares runs against each other, not against a quality bar."""
    from automoe.data import read_meta
    from search_spaces import load_space
    from supernet import ModelOptions, SuperTransformer
    from supernet.training.checkpoint import save_checkpoint

    sp = load_space(space)
    vocab = int(read_meta(data)["vocab_size"])
    model = SuperTransformer(sp, vocab, options=ModelOptions(dropout=0.0), seed=seed)
    out = root / "supernet"
    save_checkpoint(out / "checkpoint_last.pt", {
        "kind": "supernet", "space": sp.to_dict(), "vocab_size": vocab,
        "model_options": model.options.to_dict(), "update": 0, "best_loss": float("inf"),
        "model": model.state_dict(), "train_config": {"label_smoothing": 0.1},
    })
    return out


def make_world(root: Path) -> tuple[Path, Path]:
    """(supernet run dir, data dir) under ``root``."""
    data = make_data(root)
    return make_supernet(root, data), data


def kill_after_first_report(result_json: Path, done: dict, timeout: float = 120.0) -> None:
    """SIGKILLs the trial process once Tune has logged its first result (pid from it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result_json.is_file():
            lines = result_json.read_text().splitlines()
            if lines and lines[0].endswith("}"):
                row = json.loads(lines[0])
                done["updates"], done["pid"] = row["updates"], row["pid"]
                try:
                    os.kill(row["pid"], signal.SIGKILL)
                    done["killed"] = True
                except ProcessLookupError:
                    done["killed"] = False
                return
        time.sleep(0.02)
