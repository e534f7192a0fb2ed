"""Task routing from data to a served model: a multilingual data dir (en -> de, fr), a
supernet of a space with task routing, a small search, `automoe export --task` and
`translate` / `evaluate` of the per-task model.

Oracles: `supernet.task_extract.for_task` on the supernet's own extraction (the exported
weights), decoding the routed model with the task's tag (the exported model's
translations), the data dir's per-task split (evaluate's sentence count)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from search_helpers import make_multilingual_data, make_supernet

from automoe.checkpoints import load_supernet
from automoe.cli import main
from automoe.data import Tokenizer, load_split
from automoe.decoding import translate_texts
from automoe.export import load_subnet
from automoe.search import SearchSettings, run_search
from search_spaces import SubnetConfig, load_space
from supernet.task_extract import for_task

SENTENCES = ["The cat sees a dog.", "A small old man eats bread."]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    data = make_multilingual_data(root)
    space = load_space("tiny").to_dict()
    space["choices"].update(encoder_routing=["token"], decoder_routing=["task"],
                            decoder_experts=[2, 3], decoder_top_k=[1, 2])
    path = root / "routed.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    supernet = make_supernet(root, data, space=str(path), seed=3)
    run = root / "run"
    run_search(SearchSettings(
        supernet=str(supernet), data=str(data), out=str(run), objectives=("loss", "flops"),
        generations=1, population=4, dev_sentences=6, workers=0, seed=2, progress=False))
    return supernet, data, run


def test_export_task_writes_the_tasks_dense_subnet(world, tmp_path):
    supernet_dir, data, run = world
    out = tmp_path / "fr"
    assert main(["export", str(run), "--pick", "best-loss", "--task", "fr", "-o", str(out)]) == 0
    extra = json.loads((out / "config.json").read_text())["extra"]
    routed = SubnetConfig.from_dict(json.loads(pd.read_csv(run / "candidates.csv", dtype={
        "key": str}).set_index("key").loc[extra["key"], "config"]))
    assert routed.decoder_routing == "task" and extra["task"] == "fr"
    served = SubnetConfig.from_json((out / "subnet.json").read_text())
    assert served.key() == extra["served_key"] and served.decoder_experts == (1,) * len(
        served.decoder_experts)
    # the weights: the supernet's extraction of the routed subnet, reduced to task fr
    supernet, _ = load_supernet(supernet_dir / "checkpoint_last.pt")
    tag = Tokenizer.load(data).task_id("fr")
    want = for_task(supernet.eval().extract(routed), tag)
    exported = load_subnet(out)
    assert exported.task == "fr" and exported.config == want.config
    for name, tensor in want.state_dict().items():
        torch.testing.assert_close(exported.model.state_dict()[name], tensor, rtol=0, atol=0)
    # its translations are the routed model's with the tag fr in front
    view = supernet.bind(routed)
    assert exported.translate(SENTENCES, beam=2) == translate_texts(
        view, exported.tokenizer, SENTENCES, task="fr", beam=2)
    with pytest.raises(ValueError, match="exported for task 'fr' only"):
        exported.translate(SENTENCES, task="de")


def test_translate_and_evaluate_use_the_task(world, tmp_path, capsys):
    _, data, run = world
    out = tmp_path / "de"
    assert main(["export", str(run), "--pick", "best-loss", "--task", "de", "-o", str(out)]) == 0
    text = tmp_path / "in.txt"
    text.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    capsys.readouterr()
    assert main(["translate", str(out), "--input", str(text), "--beam", "1", "--device",
                 "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SENTENCES)
    assert main(["evaluate", str(out), "--data", str(data), "--beam", "1", "--device",
                 "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "de"
    assert result["sentences"] == len(load_split(data, "test").select_task("de"))


def test_task_errors_name_the_task_and_what_exists(world, tmp_path, capsys):
    _, data, run = world
    assert main(["export", str(run), "--pick", "best-loss", "--task", "es", "-o",
                 str(tmp_path / "es")]) == 2
    assert "no target language 'es'; it has de, fr" in capsys.readouterr().err
    assert not (tmp_path / "es").exists()
    # a multilingual model that was not exported for one task needs a task to translate
    routed = SubnetConfig.from_json(pd.read_csv(run / "candidates.csv")["config"].iloc[0])
    model, _ = load_supernet(world[0] / "checkpoint_last.pt")
    with pytest.raises(ValueError, match="multilingual model translates into de, fr"):
        translate_texts(model.bind(routed), Tokenizer.load(data), SENTENCES)


def test_training_a_task_routed_supernet_needs_tagged_data(world, tmp_path, capsys):
    from search_helpers import make_data

    space = world[0].parent / "routed.yaml"
    mono = make_data(tmp_path)
    assert main(["supernet", "train", "--space", str(space), "--data", str(mono), "--out",
                 str(tmp_path / "sn"), "--max-updates", "4", "--warmup-updates", "1", "-q"]) == 2
    assert "routes the decoder by task, but this data dir has no tasks" in capsys.readouterr().err
    assert not (tmp_path / "sn" / "checkpoint_last.pt").exists()


def test_search_for_one_task_scores_its_pairs_and_costs_its_served_model(world, tmp_path):
    from automoe.costs.flops import flops
    from automoe.data import TokenBatcher

    supernet_dir, data, _ = world
    run = tmp_path / "fr"
    run_search(SearchSettings(
        supernet=str(supernet_dir), data=str(data), out=str(run), objectives=("loss", "flops"),
        generations=1, population=4, dev_sentences=5, task="fr", workers=0, seed=4,
        baselines=False, progress=False))
    table = pd.read_csv(run / "candidates.csv", dtype={"key": str})
    model, _ = load_supernet(supernet_dir / "checkpoint_last.pt")
    model.eval()
    tag = Tokenizer.load(data).task_id("fr")
    fr = load_split(data, "valid").select_task("fr")
    batches = list(TokenBatcher(fr.src.take(range(5)), fr.tgt.take(range(5)), max_tokens=10**6,
                                shuffle=False))
    for _, row in table.iterrows():
        config = SubnetConfig.from_json(row["config"])
        served = for_task(model.extract(config), tag).config if config.task_routed else config
        assert row["flops"] == flops(served).flops
        nll = tokens = 0.0  # the NLL of fr's first 5 dev pairs, by hand
        with torch.no_grad():
            for b in batches:
                logits, _ = model(b.src, b.prev, config)
                nll += float(torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), b.target, ignore_index=0, reduction="sum"))
                tokens += int(b.target.ne(0).sum())
        assert row["nll"] == pytest.approx(nll / tokens, rel=1e-5)
    with pytest.raises(ValueError, match="no target language 'xx'; it has de, fr"):
        run_search(SearchSettings(supernet=str(supernet_dir), data=str(data),
                                  out=str(tmp_path / "xx"), task="xx", workers=0,
                                  progress=False))


def test_subnet_task_extracts_from_any_model_dir(world, tmp_path, capsys):
    supernet_dir, data, run = world
    routed_dir = tmp_path / "routed"
    assert main(["export", str(run), "--pick", "best-loss", "-o", str(routed_dir)]) == 0
    out = tmp_path / "de"
    assert main(["subnet", "task", str(routed_dir), "--task", "de", "-o", str(out)]) == 0
    routed, small = load_subnet(routed_dir), load_subnet(out)
    assert small.task == "de" and small.config.decoder_experts == (1,) * len(
        small.config.decoder_experts)
    want = for_task(routed.model, Tokenizer.load(data).task_id("de"))
    for name, tensor in want.state_dict().items():
        assert torch.equal(small.model.state_dict()[name], tensor)
    assert main(["subnet", "task", str(out), "--task", "de", "-o", str(tmp_path / "x")]) == 2
    assert "already the model of task 'de'" in capsys.readouterr().err
    assert main(["subnet", "task", str(routed_dir), "--task", "es", "-o",
                 str(tmp_path / "es")]) == 2
    assert "no target language 'es'" in capsys.readouterr().err and not (tmp_path / "es").exists()
