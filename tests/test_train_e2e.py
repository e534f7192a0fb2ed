"""End to end on the real parts: `automoe supernet train` and `automoe train` on a data dir
prepared from a few hundred synthetic sentence pairs, the `tiny` search space and the real
SuperTransformer / Transformer / TokenBatcher / beam search."""

from __future__ import annotations

import csv
import json
import random

import pytest
import sacrebleu
import torch

from automoe.checkpoints import load_supernet
from automoe.cli import main
from automoe.data import PrepareOptions, make_source, prepare
from search_spaces import load_space
from supernet.training.checkpoint import average_model_states, load_checkpoint
from supernet.transformer import Transformer

pytestmark = pytest.mark.slow

EN = ["the", "a", "house", "cat", "dog", "sees", "runs", "small", "big", "green", "old", "man",
      "woman", "child", "eats", "bread"]
DE = ["der", "ein", "Haus", "Katze", "Hund", "sieht", "läuft", "klein", "groß", "grün", "alt",
      "Mann", "Frau", "Kind", "isst", "Brot"]
LEX = dict(zip(EN, DE, strict=True))
FAST = ["--max-tokens", "400", "--warmup-updates", "5", "--lr", "3e-3", "-q"]


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(EN) for _ in range(rng.randint(3, 9))]
        out.append((" ".join(words).capitalize() + ".",
                    " ".join(LEX[w] for w in words).capitalize() + "."))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    files = {}
    for split, n, seed in (("train", 300, 1), ("valid", 30, 2), ("test", 20, 3)):
        pairs = _pairs(n, seed)
        src, tgt = root / f"{split}.en", root / f"{split}.de"
        src.write_text("".join(a + "\n" for a, _ in pairs), encoding="utf-8")
        tgt.write_text("".join(b + "\n" for _, b in pairs), encoding="utf-8")
        files[split] = (str(src), str(tgt))
    prepare(root / "data", make_source(files=files, verbose=False),
            PrepareOptions(vocab_size=80, max_len=40), verbose=False)
    return root / "data"


@pytest.fixture(scope="module")
def supernet_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet") / "run"
    rc = main(["supernet", "train", "--space", "tiny", "--data", str(data_dir), "--out",
               str(out), "--max-updates", "40", "--validate-every", "10", "--save-every", "20",
               *FAST])
    assert rc == 0
    return out


def _valid(run):
    with open(run / "valid_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_supernet_cli_lowers_dev_loss_of_every_probe(supernet_run, capsys):
    rows = _valid(supernet_run)
    probes = {r["probe"] for r in rows}
    assert {"smallest", "largest", "random-0", "random-1", "random-moe"} <= probes
    assert {int(r["update"]) for r in rows} == {10, 20, 30, 40}
    for name in probes:
        losses = [float(r["loss"]) for r in rows if r["probe"] == name]
        assert losses[-1] < losses[0] - 0.1, (name, losses)
    run = json.loads((supernet_run / "run.json").read_text())
    assert run["kind"] == "supernet" and run["space"] == "tiny"
    assert run["options"]["schedule_updates"] == 40 and run["options"]["update_freq"] == 1
    model, space = load_supernet(supernet_run)
    assert space.name == "tiny" and not model.training
    # the saved supernet reproduces the logged dev loss of a probe
    last = load_checkpoint(supernet_run / "checkpoint_last.pt")
    assert last["update"] == 40 and set(last["probes"]) == probes


def test_resume_to_more_updates_equals_a_straight_run(data_dir, tmp_path):
    common = ["supernet", "train", "--space", "tiny", "--data", str(data_dir), "--seed", "3",
              "--validate-every", "2", "--sampling", "sandwich", "--sandwich-random", "1",
              *FAST]
    assert main([*common, "--out", str(tmp_path / "a"), "--max-updates", "6"]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--max-updates", "3",
                 "--schedule-updates", "6"]) == 0
    assert main(["supernet", "train", "--out", str(tmp_path / "b"), "--resume",
                 "--max-updates", "6", "-q"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert a["update"] == b["update"] == 6 and a["data"] == b["data"]
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    for log in ("train_log.csv", "valid_log.csv"):
        assert (tmp_path / "a" / log).read_bytes() == (tmp_path / "b" / log).read_bytes()


def test_bad_resumes_and_checkpoints_fail_clearly(data_dir, supernet_run, tmp_path, capsys):
    assert main(["supernet", "train", "--out", str(supernet_run), "--resume", "--space", "demo",
                 "--max-updates", "41"]) == 2
    assert "space: stored 'tiny', given 'demo'" in capsys.readouterr().err
    assert main(["supernet", "train", "--space", "tiny", "--data", str(data_dir), "--out",
                 str(supernet_run), "--max-updates", "41"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    assert main(["supernet", "train", "--space", "tiny", "--data", str(data_dir), "--out",
                 str(foreign), "--max-updates", "2"]) == 2
    assert "not a training run dir" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    # a checkpoint of another space: copy the tiny run's checkpoint into a demo-space run
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint_last.pt").write_bytes((supernet_run / "checkpoint_last.pt").read_bytes())
    (other / "run.json").write_text((supernet_run / "run.json").read_text().replace(
        '"space": "tiny"', '"space": "demo"'))
    assert main(["supernet", "train", "--out", str(other), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint is for another space" in err
    assert "space.choices.encoder_embed_dim: checkpoint has [24, 32], this run has [192, 256]" in err
    (other / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    assert main(["supernet", "train", "--out", str(other), "--resume", "-q"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_subnet_training_from_inherited_weights_saves_model_and_scores_bleu(
        data_dir, supernet_run, tmp_path, capsys):
    config = load_space("tiny").smallest()
    cfg_path = tmp_path / "subnet.json"
    cfg_path.write_text(config.to_json(indent=2))
    out = tmp_path / "sub"
    rc = main(["train", "--subnet", str(cfg_path), "--init-from", str(supernet_run), "--data",
               str(data_dir), "--out", str(out), "--max-updates", "6", "--validate-every", "3",
               "--save-every", "2", "--keep-last", "2", "--average-last", "2", *FAST])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((out / "results.json").read_text())
    assert results["weights"] == "average of checkpoint_4.pt, checkpoint_6.pt"
    assert printed["test_bleu"] == results["test"]["bleu"]
    # the saved model is the average of the last two checkpoints, with the tokenizer beside it
    model = Transformer.load(out / "model")
    avg = average_model_states([out / "checkpoint_4.pt", out / "checkpoint_6.pt"])
    assert model.config == config
    for name, t in model.state_dict().items():
        assert torch.equal(t, avg[name]), name
    assert (out / "model" / "spm.model").read_bytes() == (data_dir / "spm.model").read_bytes()
    # BLEU is sacrebleu's on the written hypotheses against the test references
    hyps = (out / "test.hyp.txt").read_text(encoding="utf-8").splitlines()
    refs = (data_dir / "test.ref.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) == 20
    assert results["test"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    # inherited, not random: the first dev loss is far below that of an untrained model
    first = float(_valid(out)[0]["loss"])
    smallest = [float(r["loss"]) for r in _valid(supernet_run) if r["probe"] == "smallest"]
    assert first < smallest[0]


def test_subnet_run_refuses_a_checkpoint_that_is_not_a_supernet(data_dir, tmp_path, capsys):
    config = load_space("tiny").smallest()
    cfg_path = tmp_path / "subnet.json"
    cfg_path.write_text(config.to_json())
    base = ["train", "--subnet", str(cfg_path), "--data", str(data_dir), *FAST,
            "--warmup-updates", "0"]
    assert main([*base, "--out", str(tmp_path / "a"), "--max-updates", "1"]) == 0
    capsys.readouterr()
    # an exported model dir works as --subnet; its run's checkpoint is no supernet
    again = ["train", "--subnet", str(tmp_path / "a" / "model"), "--data", str(data_dir),
             "--out", str(tmp_path / "b"), "--max-updates", "1"]
    assert main(again) == 2
    assert "warmup_updates (50) must be smaller than" in capsys.readouterr().err
    again += ["--warmup-updates", "0"]
    assert main([*again, "--init-from", str(tmp_path / "a" / "checkpoint_last.pt")]) == 2
    assert "checkpoint is for another kind" in capsys.readouterr().err
    assert main([*again, "--init-from", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.gpu
def test_supernet_trains_on_cuda_with_bf16_autocast(data_dir, tmp_path):
    out = tmp_path / "cuda"
    assert main(["supernet", "train", "--space", "tiny", "--data", str(data_dir), "--out",
                 str(out), "--max-updates", "30", "--validate-every", "10", "--device", "cuda",
                 *FAST]) == 0
    rows = _valid(out)
    for name in {r["probe"] for r in rows}:
        losses = [float(r["loss"]) for r in rows if r["probe"] == name]
        assert losses[-1] < losses[0], (name, losses)
    model, _ = load_supernet(out, device="cuda")
    assert model.embed.is_cuda
