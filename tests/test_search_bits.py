"""`automoe search` on a space with expert precision, on loss and bytes with a bytes bound,
and `automoe export` of a quantized candidate.

Oracles: `supernet.params.weight_bytes` counted per config (itself checked against the model's
tensors in test_weight_bytes.py), the bound, and the supernet's own scoring (decoding its
bound view) of the exported subnet."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from search_helpers import make_data, make_supernet

from automoe.cli import main
from search_spaces import SubnetConfig, load_space
from supernet.params import weight_bytes


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bits")
    space_file = tmp_path / "tiny_q.yaml"
    data = load_space("tiny").to_dict()
    data["name"] = "tiny_q"
    data["choices"]["expert_bits"] = [32, 8, 4]
    space_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    space = load_space(space_file)
    world = make_data(tmp_path)
    supernet = make_supernet(tmp_path, world, space=str(space_file))
    vocab = 64
    full = weight_bytes(space.largest(), vocab).weights
    bound = 0.7 * full
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(supernet), "--data", str(world), "--out", str(out),
                 "--objectives", "loss,bytes", "--constraint", f"bytes<={bound / 1e3}KB",
                 "--population", "6", "--generations", "2", "--dev-sentences", "8",
                 "--workers", "0", "--seed", "1", "--quiet"]) == 0
    return SimpleNamespace(space=space, data=world, supernet=supernet, out=out, vocab=vocab,
                           bound=bound)


def test_search_on_loss_and_bytes_respects_a_bytes_bound(searched):
    space, out, vocab, bound = searched.space, searched.out, searched.vocab, searched.bound
    table = pd.read_csv(out / "candidates.csv")
    configs = [SubnetConfig.from_json(c) for c in table["config"]]
    assert len(configs) >= 6
    for config, got in zip(configs, table["weight_bytes"], strict=True):
        space.validate(config)
        assert got == weight_bytes(config, vocab).weights
    assert (table["weight_bytes"] <= bound).all()
    assert table["loss"].notna().all()
    assert any(not c.is_full_precision for c in configs)


def test_export_load_translate_of_an_int8_subnet_equals_the_supernets_scoring(searched,
                                                                             tmp_path):
    from automoe.checkpoints import load_supernet
    from automoe.data import Tokenizer
    from automoe.decoding import translate_texts
    from automoe.export import load_subnet
    from supernet.params import weight_bytes as bytes_of

    table = pd.read_csv(searched.out / "candidates.csv", dtype={"key": str})
    configs = {k: SubnetConfig.from_json(c) for k, c in zip(table["key"], table["config"],
                                                            strict=True)}
    int8 = [k for k, c in configs.items()
            if any(8 in layer for layer in c.encoder_expert_bits + c.decoder_expert_bits)]
    assert int8, "the seeded search drew no subnet with an int8 expert"
    key = sorted(int8)[0]
    out = tmp_path / "subnet"
    assert main(["export", str(searched.out), "--pick", key, "-o", str(out)]) == 0
    sub = load_subnet(out)
    assert sub.config == configs[key]
    supernet, _ = load_supernet(searched.supernet)
    supernet.eval()
    sentences = ["The cat sees a dog.", "A small old man eats bread.", "The child runs."]
    want = translate_texts(supernet.bind(sub.config), Tokenizer.load(searched.data), sentences,
                           beam=2, lenpen=0.6, max_len_b=6)
    assert sub.translate(sentences, beam=2, max_len_b=6) == want
    # the file holds the quantized experts: smaller than the same subnet at 32 bits
    full = dataclasses.replace(sub.config, encoder_expert_bits=(), decoder_expert_bits=())
    size = (out / "model.safetensors").stat().st_size
    stored = bytes_of(sub.config, searched.vocab)
    full_size = supernet.extract(full).save(tmp_path / "full") / "model.safetensors"
    assert stored.weights + stored.embedding < size < full_size.stat().st_size


def test_space_override_differs_only_in_bits_or_fails_naming_the_key(searched, tmp_path,
                                                                     capsys):
    from search_spaces.space import check_precision_variant

    check_precision_variant(load_space("demo"), load_space("demo_q"), source="x")
    with pytest.raises(ValueError, match=r"x: space 'tiny' differs from the supernet's space "
                                         r"'demo' in 'choices\.\w+' \("):
        check_precision_variant(load_space("demo"), load_space("tiny"), source="x")
    # the tiny_q supernet searched over tiny (the same weights, 32 bits only)
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(searched.supernet), "--data", str(searched.data),
                 "--out", str(out), "--space", "tiny", "--objectives", "loss,bytes",
                 "--population", "4", "--generations", "1", "--dev-sentences", "4",
                 "--workers", "0", "--seed", "2", "--quiet", "--no-baselines"]) == 0
    table = pd.read_csv(out / "candidates.csv")
    configs = [SubnetConfig.from_json(c) for c in table["config"]]
    assert configs and all(c.is_full_precision for c in configs)
    space = load_space("tiny")
    for config in configs:
        space.validate(config)
    bad = tmp_path / "bad"
    assert main(["search", "--supernet", str(searched.supernet), "--data", str(searched.data),
                 "--out", str(bad), "--space", "demo", "--objectives", "loss", "--workers", "0",
                 "--quiet"]) == 2
    assert "only 'choices.expert_bits' may differ" in capsys.readouterr().err
    assert not bad.exists()
