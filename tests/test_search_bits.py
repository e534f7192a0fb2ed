"""`automoe search` on a space with expert precision, on loss and bytes with a bytes bound.

Oracles: `supernet.params.weight_bytes` counted per config (itself checked against the model's
tensors in test_weight_bytes.py), the bound, and the supernet scored by hand."""

from __future__ import annotations

import pandas as pd
import yaml
from search_helpers import make_data, make_supernet

from automoe.cli import main
from search_spaces import SubnetConfig, load_space
from supernet.params import weight_bytes


def test_search_on_loss_and_bytes_respects_a_bytes_bound(tmp_path):
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
    table = pd.read_csv(out / "candidates.csv")
    configs = [SubnetConfig.from_json(c) for c in table["config"]]
    assert len(configs) >= 6
    for config, got in zip(configs, table["weight_bytes"], strict=True):
        space.validate(config)
        assert got == weight_bytes(config, vocab).weights
    assert (table["weight_bytes"] <= bound).all()
    assert table["loss"].notna().all()
    assert any(not c.is_full_precision for c in configs)
