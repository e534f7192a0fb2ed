"""Importing HAT / AutoMoE subnet YAML files, and `read_subnet`, the one subnet-file reader.

Oracles: hand-translated expected configs for files in the formats HAT and AutoMoE publish
(keys, -1/1/2 arbitrary attention, '_'-joined expert dims, over-long per-layer lists),
the writer `to_hat_yaml` as an inverse, and error messages that name file, key and value.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import yaml

from search_spaces import SearchSpace, SubnetConfig, load_space
from search_spaces.importers import import_hat_dict, import_hat_yaml, read_subnet, to_hat_yaml

HAT_IWSLT = """\
encoder-embed-dim-subtransformer: 640
decoder-embed-dim-subtransformer: 512

encoder-ffn-embed-dim-all-subtransformer: [2048, 1024, 512, 1024, 2048, 512]
decoder-ffn-embed-dim-all-subtransformer: [512, 2048, 1024, 2048, 2048, 2048]

encoder-layer-num-subtransformer: 6
decoder-layer-num-subtransformer: 3

encoder-self-attention-heads-all-subtransformer: [4, 2, 4, 4, 2, 4]
decoder-self-attention-heads-all-subtransformer: [2, 4, 4, 4, 4, 4]
decoder-ende-attention-heads-all-subtransformer: [4, 4, 2, 4, 4, 4]

# -1: the last encoder layer, 1: the last two, 2: the last three
decoder-arbitrary-ende-attn-all-subtransformer: [1, -1, 2, -1, -1, -1]
"""

AUTOMOE = """\
encoder-embed-dim-subtransformer: 512
decoder-embed-dim-subtransformer: 640
encoder-ffn-embed-dim-all-subtransformer: [3072, 3072, 3072, 3072, 3072, 3072]
decoder-ffn-embed-dim-all-subtransformer: [1024, 2048, 3072, 3072, 3072, 3072]
encoder-layer-num-subtransformer: 6
decoder-layer-num-subtransformer: 2
encoder-self-attention-heads-all-subtransformer: [8, 8, 4, 8, 8, 8]
decoder-self-attention-heads-all-subtransformer: [8, 4, 8, 8, 8, 8]
decoder-ende-attention-heads-all-subtransformer: [8, 8, 8, 8, 8, 8]
decoder-arbitrary-ende-attn-all-subtransformer: [-1, 2, -1, -1, -1, -1]
encoder-n-experts: [2, 1, 3, 1, 1, 2]
decoder-n-experts: [1, 2, 4, 6, 6, 6]
encoder-num-experts-to-route: [1, 1, 1, 1, 1, 1]
decoder-num-experts-to-route: [1, 1, 1, 1, 1, 1]
encoder-drop-mha-sublayer: [1, 1, 1, 1, 1, 1]
encoder-each-expert-ffn-dim-listoflist: ['3072_1024', '2048', '[1024_1024_3072]', 2048, [1024], '3072_2048']
decoder-each-expert-ffn-dim-listoflist: ['1024', '2048_3072', '1024_1024_1024_1024', 'x', 'y', 'z']
"""


def _file(tmp_path: Path, text: str, name: str = "subnet.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_hat_iwslt_file(tmp_path):
    config = import_hat_yaml(_file(tmp_path, HAT_IWSLT), load_space("hat_iwslt14"))
    assert config == SubnetConfig(
        encoder_embed_dim=640, decoder_embed_dim=512, qkv_dim=512,
        encoder_expert_dims=((2048,), (1024,), (512,), (1024,), (2048,), (512,)),
        encoder_heads=(4, 2, 4, 4, 2, 4), encoder_top_k=(1,) * 6,
        decoder_expert_dims=((512,), (2048,), (1024,)), decoder_heads=(2, 4, 4),
        decoder_cross_heads=(4, 4, 2), decoder_ende_attn=(2, 1, 3), decoder_top_k=(1, 1, 1),
    )


def test_automoe_file_with_heterogeneous_experts(tmp_path):
    config = import_hat_yaml(_file(tmp_path, AUTOMOE), load_space("automoe_wmt14"))
    assert config.encoder_expert_dims == (
        (3072, 1024), (2048,), (1024, 1024, 3072), (2048,), (1024,), (3072, 2048))
    # values beyond the 2 active decoder layers ('x', 'y', 'z', 4 experts) are dropped
    assert config.decoder_expert_dims == ((1024,), (2048, 3072))
    assert config.decoder_ende_attn == (1, 3) and config.decoder_heads == (8, 4)
    assert config.encoder_top_k == (1,) * 6 and config.decoder_top_k == (1, 1)


def test_automoe_dense_file_without_expert_keys(tmp_path):
    # AutoMoE's subtransformer/moe.yml style: routing keys, no expert keys -> dense layers
    text = """\
        encoder-embed-dim-subtransformer: 512
        decoder-embed-dim-subtransformer: 512
        encoder-ffn-embed-dim-all-subtransformer: [3072, 3072, 3072, 3072, 3072, 3072]
        decoder-ffn-embed-dim-all-subtransformer: [3072, 3072, 3072, 3072, 3072, 3072]
        encoder-layer-num-subtransformer: 6
        decoder-layer-num-subtransformer: 6
        encoder-self-attention-heads-all-subtransformer: [8, 8, 8, 8, 8, 8]
        decoder-self-attention-heads-all-subtransformer: [8, 8, 8, 8, 8, 8]
        decoder-ende-attention-heads-all-subtransformer: [8, 8, 8, 8, 8, 8]
        decoder-arbitrary-ende-attn-all-subtransformer: [-1, -1, -1, -1, -1, -1]
        encoder-num-experts-to-route: [1, 1, 1, 1, 1, 1]
        decoder-num-experts-to-route: [1, 1, 1, 1, 1, 1]
        """
    config = import_hat_yaml(_file(tmp_path, text), load_space("automoe_wmt14"))
    hat = import_hat_yaml(_file(tmp_path, text), load_space("hat_wmt14"))
    assert config == hat and config.is_dense
    assert config.encoder_expert_dims == ((3072,),) * 6 and config.decoder_ende_attn == (1,) * 6
    assert config.decoder_heads == (8,) * 6 and config.decoder_top_k == (1,) * 6


def test_homogeneous_experts_from_layer_ffn_and_string_list():
    space = load_space("tiny")
    data = {
        "encoder-embed-dim-subtransformer": 32, "decoder-embed-dim-subtransformer": 24,
        "encoder-layer-num-subtransformer": 1, "decoder-layer-num-subtransformer": 1,
        "encoder-ffn-embed-dim-all-subtransformer": [64, 32],
        "decoder-ffn-embed-dim-all-subtransformer": [32],
        "encoder-self-attention-heads-all-subtransformer": [4],
        "decoder-self-attention-heads-all-subtransformer": [2],
        "decoder-ende-attention-heads-all-subtransformer": [2],
        "decoder-arbitrary-ende-attn-all-subtransformer": [-1],
        "encoder-n-experts": [3], "encoder-num-experts-to-route": [2],
        "decoder-each-expert-ffn-dim-listoflist": "['32_64']",
    }
    config = import_hat_dict(data, space)
    assert config.encoder_expert_dims == ((64, 64, 64),) and config.encoder_top_k == (2,)
    assert config.decoder_expert_dims == ((32, 64),) and config.decoder_top_k == (1,)


def test_writer_is_the_inverse(space_name):
    space = load_space(space_name)
    rng = random.Random(0)
    for _ in range(30):
        config = space.sample(rng)
        if not config.is_full_precision:  # the format has no precision key
            with pytest.raises(ValueError, match="no expert precision"):
                to_hat_yaml(config)
            continue
        if (config.encoder_routing, config.decoder_routing) != ("token", "token"):
            with pytest.raises(ValueError, match="no routing key"):  # nor a routing key
                to_hat_yaml(config)
            continue
        assert import_hat_dict(yaml.safe_load(to_hat_yaml(config)), space) == config


def _edit(text: str, key: str, value: str) -> str:
    lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines()]
    if not any(line.startswith(f"{key}:") for line in text.splitlines()):
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


BAD = [
    # (key, new value or None to delete, key named in the message, value quoted in it)
    ("decoder-layer-num-subtransformer", None, "decoder-layer-num-subtransformer", "missing"),
    ("encoder-head-count", "[8]", "encoder-head-count", "unknown"),
    ("decoder-arbitrary-ende-attn-all-subtransformer", "[3, -1]",
     "decoder-arbitrary-ende-attn-all-subtransformer", "3"),
    ("encoder-self-attention-heads-all-subtransformer", "[8, 8]",
     "encoder-self-attention-heads-all-subtransformer", "[8, 8]"),
    ("encoder-each-expert-ffn-dim-listoflist", "['3072_x', '1', '1', '1', '1', '1']",
     "encoder-each-expert-ffn-dim-listoflist", "'3072_x'"),
    ("encoder-n-experts", "[1, 1, 3, 1, 1, 2]", "encoder-n-experts", "[3072, 1024]"),
    ("encoder-drop-mha-sublayer", "[0, 1, 1, 1, 1, 1]", "encoder-drop-mha-sublayer", "[0, 1"),
    ("encoder-embed-dim-subtransformer", "768", "encoder_embed_dim", "768"),
    ("encoder-embed-dim-subtransformer", "'512'", "encoder-embed-dim-subtransformer", "'512'"),
    ("decoder-num-experts-to-route", "[2, 1]", "decoder_top_k", "2"),
]


@pytest.mark.parametrize(("key", "value", "named", "quoted"), BAD)
def test_bad_files_name_file_key_and_value(tmp_path, key, value, named, quoted):
    if value is None:
        text = "\n".join(line for line in AUTOMOE.splitlines() if not line.startswith(key))
    else:
        text = _edit(AUTOMOE, key, value)
    path = _file(tmp_path, text)
    with pytest.raises(ValueError) as err:
        import_hat_yaml(path, load_space("automoe_wmt14"))
    msg = str(err.value)
    assert str(path) in msg and named in msg and quoted in msg, msg


def test_missing_file_bad_yaml_and_ambiguous_qkv(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_hat_yaml(tmp_path / "none.yml", load_space("tiny"))
    with pytest.raises(ValueError, match="not valid YAML"):
        import_hat_yaml(_file(tmp_path, "a: [1\n"), load_space("tiny"))
    data = load_space("tiny").to_dict()
    data["choices"]["qkv_dim"] = [16, 32]
    data["choices"]["encoder_heads"] = data["choices"]["decoder_heads"] = [2, 4]
    two_qkv = SearchSpace.from_dict(data)
    with pytest.raises(ValueError, match="'qkv-dim' is missing.*\\[16, 32\\]"):
        import_hat_dict({"encoder-layer-num-subtransformer": 1}, two_qkv)


def test_read_subnet_reads_every_subnet_file_kind(tmp_path):
    """Oracle: the config written, in each format; options and vocab only from a model's
    config.json (written here as `supernet.export` writes it)."""
    import json

    tiny = load_space("tiny")
    config = tiny.sample(random.Random(5))
    (tmp_path / "s.json").write_text(config.to_json())
    (tmp_path / "s.yml").write_text(to_hat_yaml(config))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "format": "automoe-transformer", "architecture": config.to_dict(), "vocab_size": 40,
        "options": {"normalize_before": True}}))
    plain = read_subnet(tmp_path / "s.json")
    assert plain.config == config and plain.options is None and plain.vocab_size is None
    assert read_subnet(tmp_path / "s.yml", tiny).config == config
    for path in (model, model / "config.json"):
        sub = read_subnet(path, tiny)
        assert sub.config == config and sub.path == model / "config.json"
        assert sub.options == {"normalize_before": True} and sub.vocab_size == 40


def test_read_subnet_errors_name_the_file(tmp_path):
    import json

    tiny = load_space("tiny")
    with pytest.raises(FileNotFoundError, match="no such subnet config file"):
        read_subnet(tmp_path / "none.json")
    yml = _file(tmp_path, to_hat_yaml(tiny.largest()))
    with pytest.raises(ValueError, match="read against a search space"):
        read_subnet(yml)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_subnet(bad)
    for key, value in (("vocab_size", "8k"), ("options", [1])):
        bad.write_text(json.dumps({"architecture": tiny.largest().to_dict(), key: value}))
        with pytest.raises(ValueError, match=f"bad.json: key '{key}'"):
            read_subnet(bad)
    outside = tmp_path / "outside.json"
    outside.write_text(load_space("demo").largest().to_json())
    assert read_subnet(outside).config == load_space("demo").largest()  # no space: no check
    with pytest.raises(ValueError, match="outside.json"):
        read_subnet(outside, tiny)
