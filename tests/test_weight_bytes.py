"""Model bytes at expert precision (`weight_bytes`), the `bytes` search metric and its units.

Oracle: the parameters of the static model built from the config (shapes on the meta device),
each tensor counted by hand: fp32 at 4 bytes, an expert weight matrix at b bits as
``ceil(in·b/8)`` bytes per output row plus a 4-byte scale per output row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re

import pytest

from automoe.cli import main
from automoe.costs.flops import FlopsProtocol, flops
from automoe.costs.report import cost_report
from automoe.search.objectives import parse_constraint, parse_objectives
from search_spaces import load_space
from supernet.params import count_params, weight_bytes
from supernet.transformer import Transformer

VOCAB = 64
_EXPERT = re.compile(r"^(encoder|decoder)_layers\.(\d+)\.moe\.experts\.(\d+)\.fc[12]\.weight$")


def _independent_bytes(config, *, normalize_before: bool) -> tuple[int, int]:
    """(weights, embedding) bytes from the static model's parameter tensors."""
    full = dataclasses.replace(config, encoder_expert_bits=(), decoder_expert_bits=())
    model = Transformer(full, VOCAB, device="meta",
                        options=dataclasses.replace(_options(), normalize_before=normalize_before))
    weights = embedding = 0
    for name, p in model.named_parameters():
        if name == "embed":
            embedding += 4 * p.numel()
            continue
        match = _EXPERT.match(name)
        bits = 32
        if match:
            side, i, j = match.group(1), int(match.group(2)), int(match.group(3))
            bits = getattr(config, f"{side}_expert_bits")[i][j]
        if bits == 32:
            weights += 4 * p.numel()
        else:
            out_features, in_features = p.shape
            weights += out_features * math.ceil(in_features * bits / 8) + 4 * out_features
    return weights, embedding


def _options():
    from supernet.options import DEFAULT_OPTIONS

    return DEFAULT_OPTIONS


def _configs():
    space = load_space("demo_q")
    rng = random.Random(11)
    out = [space.largest(), space.smallest()]
    out += [space.sample(rng) for _ in range(6)]
    # an odd input width at 4 bits: a row's packed bytes round up
    odd = dataclasses.replace(load_space("tiny").smallest(), encoder_embed_dim=25,
                              encoder_expert_bits=((4,),))
    return [*out, odd]


@pytest.mark.parametrize("normalize_before", [False, True])
def test_weight_bytes_equal_an_independent_count(normalize_before):
    for config in _configs():
        got = weight_bytes(config, VOCAB, normalize_before=normalize_before)
        assert (got.weights, got.embedding) == _independent_bytes(
            config, normalize_before=normalize_before), config.to_json()


def test_full_precision_bytes_are_four_per_parameter_and_flops_do_not_move():
    space = load_space("demo_q")
    rng = random.Random(2)
    for _ in range(5):
        config = space.sample(rng)
        full = dataclasses.replace(config, encoder_expert_bits=(), decoder_expert_bits=())
        counts = count_params(full, VOCAB)
        assert weight_bytes(full, VOCAB).weights == 4 * counts.hat
        assert weight_bytes(config, VOCAB).weights <= 4 * counts.hat
        assert weight_bytes(config, VOCAB).embedding == 4 * counts.embedding
        # weight-only quantization changes no matmul count
        assert flops(config).macs == flops(full).macs


def test_cost_report_has_bytes_next_to_params_and_flops(tmp_path, capsys):
    config = load_space("demo_q").smallest()
    path = tmp_path / "q.json"
    path.write_text(config.to_json(indent=2), encoding="utf-8")
    assert main(["cost", str(path), "--space", "demo_q", "--json", "--vocab-size", str(VOCAB)]) == 0
    report = json.loads(capsys.readouterr().out)
    weights, embedding = _independent_bytes(config, normalize_before=False)
    assert report["weight_bytes"] == weights and report["embedding_bytes"] == embedding
    assert report["params_hat"] == count_params(config, VOCAB).hat
    assert report["key"] == config.key()
    old = cost_report(load_space("demo").largest(), FlopsProtocol(), VOCAB)
    assert old["weight_bytes"] == 4 * old["params_hat"]


@pytest.mark.parametrize(
    ("text", "bound"),
    [("bytes<=4MB", 4e6), ("bytes<=512KB", 512e3), ("bytes<=1.5GB", 1.5e9), ("bytes<=300B", 300.0),
     ("bytes<=1e6", 1e6), ("weight_bytes<=2MB", 2e6)],
)
def test_bytes_constraint_units(text, bound):
    c = parse_constraint(text)
    assert (c.name, c.op) == ("weight_bytes", "<=") and c.bound == pytest.approx(bound)


@pytest.mark.parametrize(
    ("text", "match"),
    [("bytes<=4MiB", r"--constraint 'bytes<=4MiB': unit 'MiB' is not one of \['B', 'GB', 'KB', 'MB'\]"),
     ("bytes<=4ms", r"unit 'ms' is not one of .* for bytes"),
     ("bytes<=four", r"expected NAME<=NUMBER\[UNIT\]"),
     ("flops<=4MB", r"unit 'MB' is not one of .* for flops")],
)
def test_bad_bytes_constraints_name_the_flag_and_unit(text, match):
    with pytest.raises(ValueError, match=match):
        parse_constraint(text)


def test_bytes_is_an_objective():
    objectives = parse_objectives("loss,latency,bytes")
    assert [(o.name, o.direction) for o in objectives] == [
        ("loss", "min"), ("latency_ms", "min"), ("weight_bytes", "min")]


@pytest.mark.parametrize("normalize_before", [False, True])
def test_the_searchs_cheap_byte_count_follows_the_supernets_layer_norm(normalize_before):
    """`CheapCosts` (the search's bytes metric) counts what the supernet's subnets hold:
    pre-LN adds a final layer norm per side."""
    from types import SimpleNamespace

    from automoe.search.scoring import CheapCosts

    space = load_space("demo_q")
    checkpoint = SimpleNamespace(space=space, vocab_size=VOCAB,
                                 options={"normalize_before": normalize_before})
    costs = CheapCosts(checkpoint)
    for config in _configs()[:-1]:
        assert costs(config)["weight_bytes"] == _independent_bytes(
            config, normalize_before=normalize_before)[0]
