"""`automoe export` / `automoe.load_subnet`: every pick rule against a brute-force choice
over the run's tables, the exported weights against `supernet.extract`, its translations
against decoding the supernet's bound view, the files `translate`/`evaluate`/`cost` read,
and every bad input failing with exit 2 and no SUBNET_DIR left behind.

One small real search (serial, bleu/loss/latency objectives, a loss constraint that makes
some candidates infeasible) on a tiny random-weight supernet is shared by the module. Its
BLEU is 0 everywhere (random weights), so BLEU ranking and ties are also checked on random
synthetic tables."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sacrebleu
import torch
from search_helpers import make_world

from automoe.cli import main
from automoe.export import load_subnet, select_key
from automoe.run_dir import read_run
from automoe.search import SearchSettings, run_search
from automoe.search.objectives import parse_objectives

SENTENCES = ["The cat sees a dog.", "A small old man eats bread.", "The child runs.",
             "A big house."]
# Objective name -> (column, maximise), written out independently of automoe.search.
COLUMNS = {"bleu": ("bleu", True), "loss": ("loss", False), "latency": ("latency_ms", False),
           "flops": ("flops", False), "params": ("params", False)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    supernet, data = world
    out = tmp_path_factory.mktemp("search") / "run"
    run_search(SearchSettings(
        supernet=str(supernet), data=str(data), out=str(out),
        objectives=("bleu", "loss", "latency"), constraints=("loss<=4.87",), generations=2,
        population=5, dev_sentences=4, workers=0, seed=1, latency_runs=2, latency_warmup=0,
        progress=False))
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "best_loss"
    assert main(["export", str(run), "--pick", "best-loss", "-o", str(out)]) == 0
    return out


def _rows(run: Path) -> list[dict]:
    return pd.read_csv(run / "candidates.csv", dtype={"key": str}).to_dict("records")


def _oracle_best(rows, column, maximize, keep=lambda r: True):
    cands = [r for r in rows if r["feasible"] and keep(r) and not math.isnan(r[column])]
    return min(cands, key=lambda r: (-r[column] if maximize else r[column], r["key"]))["key"]


def _oracle_knee(front_rows, names):
    cols = [COLUMNS[n.split(":")[0]] for n in names]
    best = None
    for r in front_rows:
        total = 0.0
        for col, maximize in cols:
            vals = [q[col] for q in front_rows]
            lo, hi = min(vals), max(vals)
            if hi > lo:
                total += (((hi - r[col]) if maximize else (r[col] - lo)) / (hi - lo)) ** 2
        cand = (math.sqrt(total), r["key"])
        best = cand if best is None or cand < best else best
    return best[1]


def _export(run, tmp_path, rule, name="out") -> dict:
    out = tmp_path / name
    assert main(["export", str(run), "--pick", rule, "-o", str(out)]) == 0, rule
    return json.loads((out / "scores.json").read_text())


def test_pick_rules_on_the_run_match_brute_force(run, tmp_path):
    rows = _rows(run)
    front = pd.read_csv(run / "pareto.csv", dtype={"key": str}).to_dict("records")
    meta = json.loads((run / "search.json").read_text())
    feasible = [r for r in rows if r["feasible"]]
    assert 2 <= len(feasible) < len(rows)  # the loss bound made some infeasible
    lat, flops, params = (sorted(r[c] for r in feasible)[len(feasible) // 2]
                          for c in ("latency_ms", "flops", "params"))
    # The bounds as the rules state them, converted back exactly as a parser must.
    lat_s, flops_m = lat / 1000, flops / 1e6
    expected = {
        "best-bleu": _oracle_best(rows, "bleu", True),
        "best-loss": _oracle_best(rows, "loss", False),
        "knee": _oracle_knee(front, meta["settings"]["objectives"]),
        f"latency<={lat_s!r}s": _oracle_best(rows, "bleu", True,
                                             lambda r: r["latency_ms"] <= lat_s * 1e3),
        f"flops<={flops_m!r}M": _oracle_best(rows, "bleu", True,
                                             lambda r: r["flops"] <= flops_m * 1e6),
        f"params>={params!r}": _oracle_best(rows, "bleu", True, lambda r: r["params"] >= params),
        rows[-1]["key"][:7].upper(): rows[-1]["key"],  # a prefix (an infeasible one allowed)
        rows[0]["key"]: rows[0]["key"],
    }
    for i, (rule, key) in enumerate(expected.items()):
        scores = _export(run, tmp_path, rule, name=f"o{i}")
        assert scores["key"] == key, rule
        assert scores["pick"] == rule
        row = next(r for r in rows if r["key"] == key)
        assert scores["loss"] == pytest.approx(row["loss"], rel=1e-12)
        assert scores["latency_ms"] == pytest.approx(row["latency_ms"], rel=1e-12)


def _synthetic(rng: random.Random, n: int, names: tuple[str, ...], bleu: bool):
    rows = []
    for i in range(n):
        rows.append({"key": f"{rng.getrandbits(64):016x}" if i else "0" * 15 + "7",
                     "bleu": float(rng.choice([0, 1, 2, 3, 3.5])) if bleu else None,
                     "loss": float(rng.randint(1, 6)), "latency_ms": float(rng.randint(1, 9)),
                     "flops": float(rng.randint(1, 5)) * 1e9, "params": float(rng.randint(1, 7)) * 1e6,
                     "feasible": rng.random() < 0.7})
    frame = pd.DataFrame(rows).drop(columns=[] if bleu else ["bleu"])
    cols = [COLUMNS[n] for n in names]
    pts = [[(-r[c] if mx else r[c]) for c, mx in cols] for r in rows]
    dominated = [any(all(q[j] <= p[j] for j in range(len(p))) and q != p
                     for q, qr in zip(pts, rows, strict=True) if qr["feasible"]) for p in pts]
    front = frame[[r["feasible"] and not d for r, d in zip(rows, dominated, strict=True)]]
    return frame, front.reset_index(drop=True)


@pytest.mark.parametrize("names", [("bleu", "flops"), ("bleu", "loss", "latency"),
                                   ("loss", "bleu", "flops"), ("loss", "flops"),
                                   ("loss", "params", "latency")])
def test_pick_rules_on_random_tables_match_brute_force(names):
    rng = random.Random(",".join(names))
    objectives = parse_objectives(",".join(names))
    bleu = "bleu" in names  # bounds rank by BLEU when the run has it
    for trial in range(25):
        frame, front = _synthetic(rng, rng.randint(1, 12), names, bleu)
        rows = frame.to_dict("records")
        if not any(r["feasible"] for r in rows):
            continue
        first, first_max = COLUMNS[names[0]]
        if not front.empty:
            assert select_key(frame, front, objectives, "knee") == \
                _oracle_knee(front.to_dict("records"), names)
        assert select_key(frame, front, objectives, "best-loss") == \
            _oracle_best(rows, "loss", False)
        if bleu:
            assert select_key(frame, front, objectives, "best-bleu") == \
                _oracle_best(rows, "bleu", True)
        bound = rng.randint(1, 9)
        rank = ("bleu", True) if bleu else (first, first_max)
        meets = [r for r in rows if r["feasible"] and r["latency_ms"] <= bound]
        if meets:
            assert select_key(frame, front, objectives, f"latency<={bound}ms") == \
                _oracle_best(rows, *rank, lambda r, b=bound: r["latency_ms"] <= b), trial
        else:
            smallest = min(r["latency_ms"] for r in rows if r["feasible"])
            with pytest.raises(ValueError, match=f"smallest available is latency_ms={smallest:g}"):
                select_key(frame, front, objectives, f"latency<={bound}ms")
        g = rng.randint(1, 5)
        if any(r["feasible"] and r["flops"] >= g * 1e9 for r in rows):
            assert select_key(frame, front, objectives, f"flops>={g}G") == \
                _oracle_best(rows, *rank, lambda r, g=g: r["flops"] >= g * 1e9)


def test_knee_of_a_one_point_front_and_two_objectives():
    objectives = parse_objectives("bleu,flops")
    frame = pd.DataFrame({"key": ["aaaa000000000001", "bbbb000000000002", "cccc000000000003"],
                          "bleu": [10.0, 20.0, 30.0], "flops": [1e9, 2e9, 9e9],
                          "feasible": [True, True, True]})
    # Normalised (min space): a=(1,0) d=1, b=(0.5,0.125) d=0.515, c=(0,1) d=1 -> b.
    assert select_key(frame, frame, objectives, "knee") == "bbbb000000000002"
    assert select_key(frame, frame.iloc[2:], objectives, "knee") == "cccc000000000003"
    with pytest.raises(ValueError, match="front is empty"):
        select_key(frame, frame.iloc[:0], objectives, "knee")


def test_exported_weights_and_translations_equal_the_supernets(world, exported):
    from automoe.checkpoints import load_supernet
    from automoe.data import Tokenizer
    from automoe.decoding import translate_texts
    from search_spaces import SubnetConfig
    from search_spaces.importers import read_subnet

    supernet_dir, data = world
    sub = load_subnet(exported)
    assert sub.model.training is False
    assert sub.config == read_subnet(exported / "subnet.json").config == read_subnet(
        exported).config
    assert sub.config == SubnetConfig.from_json((exported / "subnet.json").read_text())
    supernet, _ = load_supernet(supernet_dir)
    reference = supernet.extract(sub.config).state_dict()
    state = sub.model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    tokenizer = Tokenizer.load(data)
    view = supernet.bind(sub.config)
    for beam, lenpen in ((1, 1.0), (3, 0.6)):
        want = translate_texts(view, tokenizer, SENTENCES, beam=beam, lenpen=lenpen,
                               max_len_b=6)
        assert sub.translate(SENTENCES, beam=beam, lenpen=lenpen, max_len_b=6) == want
    # Provenance and scores.
    assert (exported / "spm.model").read_bytes() == (data / "spm.model").read_bytes()
    extra = json.loads((exported / "config.json").read_text())["extra"]
    assert extra["key"] == sub.config.key() == sub.scores["key"]
    assert extra["pick"] == "best-loss"
    assert Path(extra["supernet_checkpoint"]) == (supernet_dir / "checkpoint_last.pt").resolve()
    assert sub.scores["weights"] == f"inherited from supernet {extra['supernet_checkpoint']} " \
                                    "(not retrained)"
    assert sub.scores["latency_device"] and "latency" in sub.scores["protocols"]
    assert sub.scores["objectives"] == ["bleu", "loss", "latency"]
    with pytest.raises(ValueError, match="list of sentences"):
        sub.translate("The cat.")


def test_translate_evaluate_and_cost_commands_read_the_export(world, exported, tmp_path,
                                                              capsys):

    _, data = world
    src = tmp_path / "in.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    hyp = tmp_path / "out.txt"
    assert main(["translate", str(exported), "--input", str(src), "--output", str(hyp),
                 "--beam", "2", "--max-len-b", "6", "--device", "cpu"]) == 0
    want = load_subnet(exported).translate(SENTENCES, beam=2, lenpen=0.6, max_len_b=6,
                                           max_tokens=8192)
    assert hyp.read_text(encoding="utf-8").split("\n")[:-1] == want
    hyps, scores = tmp_path / "test.hyp", tmp_path / "test.json"
    assert main(["evaluate", str(exported), "--data", str(data), "--limit", "3", "--beam",
                 "1", "--max-len-b", "6", "--hyps", str(hyps), "--json", str(scores),
                 "--device", "cpu"]) == 0
    lines = hyps.read_text(encoding="utf-8").split("\n")[:-1]
    refs = (Path(data) / "test.ref.txt").read_text(encoding="utf-8").split("\n")[:3]
    assert json.loads(scores.read_text())["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(lines, [refs]).score)
    assert main(["cost", str(exported / "subnet.json"), "--space", "tiny"]) == 0
    capsys.readouterr()


def test_overwrite_replaces_an_earlier_export(run, exported, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(exported, out)
    assert main(["export", str(run), "--pick", "knee", "-o", str(out), "--overwrite"]) == 0
    assert json.loads((out / "scores.json").read_text())["pick"] == "knee"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "spm.model", "subnet.json", "scores.json"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_import_automoe_is_torch_free_and_exposes_load_subnet():
    code = ("import sys, automoe; assert 'torch' not in sys.modules; "
            "from automoe import load_subnet; import automoe.export as e; "
            "assert load_subnet is e.load_subnet")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        import automoe

        automoe.no_such_name  # noqa: B018


def _fails(capsys, tmp_path, argv, *needles, out_name="bad"):
    out = tmp_path / out_name
    assert main(["export", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "automoe export: error:" in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out_name}")] == []
    return out


def test_bad_input_fails_clearly_and_writes_nothing(run, exported, tmp_path, capsys):
    rows = _rows(run)
    feasible_lat = min(r["latency_ms"] for r in rows if r["feasible"])
    closest = _oracle_best(rows, "latency_ms", False)
    cases = [
        (["--pick", "fastest"], "unknown pick rule", "'fastest'"),
        (["--pick", "latency<=0.001ms"], "smallest available", f"{feasible_lat:g}", closest),
        (["--pick", "flops<=2Q"], "unit 'Q'"),
        (["--pick", "beam<=3"], "unknown metric 'beam'"),
        (["--pick", "abc"], "at least 4 hex digits"),
        (["--pick", "ffffffffffffffff"], "no candidate has a key starting with"),
    ]
    for extra, *needles in cases:
        out = _fails(capsys, tmp_path, [str(run), *extra], *needles)
        assert not out.exists()
    missing = tmp_path / "no_run"
    assert not _fails(capsys, tmp_path, [str(missing)], str(missing)).exists()
    # A non-empty -o is kept as it was, with or without --overwrite (not a model dir).
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    _fails(capsys, tmp_path, [str(run)], "not empty", out_name="busy")
    assert main(["export", str(run), "-o", str(busy), "--overwrite"]) == 2
    assert "written by `automoe export`" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    # a model directory with a file of the user's in it: refused, nothing lost
    mixed = tmp_path / "mixed"
    shutil.copytree(exported, mixed)
    (mixed / "thesis.tex").write_text("years of work")
    assert main(["export", str(run), "-o", str(mixed), "--overwrite"]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert (mixed / "thesis.tex").read_text() == "years of work"
    # a foreign directory that merely has a config.json: refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    assert main(["export", str(run), "-o", str(foreign), "--overwrite"]) == 2
    assert (foreign / "config.json").read_text() == "{}"


def test_bad_runs_fail_clearly(run, tmp_path, capsys):
    # Two keys sharing a prefix: ambiguous.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    table = pd.read_csv(copy / "candidates.csv", dtype={"key": str})
    twin = table.iloc[[0]].copy()
    twin["key"] = table["key"].iloc[0][:6] + "0123456789"[:10]
    pd.concat([table, twin]).to_csv(copy / "candidates.csv", index=False)
    assert not _fails(capsys, tmp_path, [str(copy), "--pick", table["key"].iloc[0][:6]],
                      "ambiguous", table["key"].iloc[0][:6]).exists()
    # No bleu column: best-bleu names the run and suggests another rule.
    table.drop(columns=["bleu"]).to_csv(copy / "candidates.csv", index=False)
    assert not _fails(capsys, tmp_path, [str(copy)], str(copy), "no 'bleu' column",
                      "best-loss").exists()
    # The supernet checkpoint changed since the search: the weights would not be the scored ones.
    table.to_csv(copy / "candidates.csv", index=False)
    meta = json.loads((copy / "search.json").read_text())
    meta["supernet"]["sha256"] = "0" * 64
    (copy / "search.json").write_text(json.dumps(meta))
    assert not _fails(capsys, tmp_path, [str(copy)], "changed since search").exists()
    # Not a search run at all.
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not _fails(capsys, tmp_path, [str(plain)], "search.json").exists()
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_subnet(tmp_path / "nowhere")
    assert read_run(run).candidates["key"].map(len).eq(16).all()


def test_export_onnx_translates_as_torch_and_bad_graphs_name_the_file(world, run, tmp_path,
                                                                      capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "with_onnx"
    assert main(["export", str(run), "--pick", "best-loss", "-o", str(out), "--onnx"]) == 0
    key = json.loads((out / "scores.json").read_text())["key"]
    meta = json.loads((out / "onnx" / "onnx.json").read_text())
    assert meta["architecture_key"] == key
    assert sorted(p.name for p in (out / "onnx").iterdir()) == [
        "decoder_step.onnx", "encoder.onnx", "onnx.json"]
    assert main(["onnx", str(out), "--check"]) == 0
    src, hyp = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert main(["translate", str(out), "--input", str(src), "--output", str(hyp), "--beam",
                 "2", "--max-len-b", "6", "--runtime", "onnxruntime"]) == 0
    want = load_subnet(out).translate(SENTENCES, beam=2, lenpen=0.6, max_len_b=6)
    assert hyp.read_text(encoding="utf-8").split("\n")[:-1] == want
    _, data = world
    for runtime in ("torch", "onnxruntime"):
        assert main(["evaluate", str(out), "--data", str(data), "--limit", "3", "--beam", "1",
                     "--max-len-b", "6", "--hyps", str(tmp_path / f"{runtime}.hyp"),
                     "--runtime", runtime, "--device", "cpu"]) == 0
    assert (tmp_path / "onnxruntime.hyp").read_text() == (tmp_path / "torch.hyp").read_text()
    capsys.readouterr()
    assert main(["onnx", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    step = out / "onnx" / "decoder_step.onnx"
    step.write_bytes(b"not a graph")
    assert main(["onnx", str(out), "--check"]) == 2
    assert str(step) in capsys.readouterr().err
    step.unlink()
    assert main(["onnx", str(out), "--check"]) == 2
    assert str(step) in capsys.readouterr().err
    assert main(["translate", str(out), "--input", str(src), "--runtime", "onnxruntime"]) == 2
    assert str(step) in capsys.readouterr().err
