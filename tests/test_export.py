"""Saving and loading a static Transformer: exact round trip; clear errors for corrupt,
truncated or mismatched files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from search_spaces import SubnetConfig, load_space
from supernet import EOS_ID, PAD_ID, ModelOptions, SuperTransformer, Transformer
from supernet.model_dir import CONFIG_FILE, WEIGHTS_FILE

VOCAB = 30
CONFIG = SubnetConfig(
    encoder_embed_dim=24, decoder_embed_dim=32, qkv_dim=32,
    encoder_expert_dims=((64, 32, 32),), encoder_heads=(4,), encoder_top_k=(2,),
    decoder_expert_dims=((32,), (64, 32)), decoder_heads=(2, 4), decoder_cross_heads=(4, 2),
    decoder_ende_attn=(1, 1), decoder_top_k=(1, 1))


@pytest.fixture(scope="module")
def model() -> Transformer:
    supernet = SuperTransformer(load_space("tiny"), VOCAB, options=ModelOptions(dropout=0.2),
                                seed=3)
    return supernet.extract(CONFIG).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (2, 6), generator=g)
    src[:, -1] = EOS_ID
    src[1, 4:] = PAD_ID
    prev = torch.randint(4, VOCAB, (2, 5), generator=g)
    return src, prev


def test_round_trip_is_exact(model, tmp_path):
    out = model.save(tmp_path / "m", extra={"space": "tiny"})
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["format_version"] == 1 and meta["vocab_size"] == VOCAB
    assert meta["architecture_key"] == CONFIG.key() and meta["extra"] == {"space": "tiny"}
    loaded = Transformer.load(out)
    assert loaded.config == CONFIG and loaded.options == model.options
    assert loaded.options.dropout_reference_dims == (32, 32)  # the supernet's widths
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    src, prev = inputs()
    assert torch.equal(model(src, prev)[0], loaded(src, prev)[0])


def test_bf16_round_trip_keeps_dtype(tmp_path):
    small = Transformer(CONFIG, VOCAB, seed=1).to(torch.bfloat16)
    loaded = Transformer.load(small.save(tmp_path / "bf16"))
    assert loaded.embed.dtype == torch.bfloat16
    assert all(torch.equal(p, q) for p, q in zip(small.parameters(), loaded.parameters(),
                                                 strict=True))


def test_overwrite_rules(model, tmp_path):
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    other = Transformer(CONFIG, VOCAB, seed=9)
    other.save(tmp_path / "m", overwrite=True)
    assert torch.equal(Transformer.load(tmp_path / "m").embed, other.embed)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no leftovers


def test_constructor_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = Transformer(CONFIG, VOCAB, seed=5)
    b = Transformer(CONFIG, VOCAB, seed=5)
    c = Transformer(CONFIG, VOCAB, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.embed, c.embed)
    assert not a.embed[PAD_ID].any()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_or_truncated_weights_fail_clearly(model, tmp_path, damage):
    out = model.save(tmp_path / "m")
    path = out / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not safetensors" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match=WEIGHTS_FILE):
        Transformer.load(out)


def edit_config(out, **changes) -> None:
    meta = json.loads((out / CONFIG_FILE).read_text())
    for key, value in changes.items():
        if key == "architecture":
            meta[key].update(value)
        else:
            meta[key] = value
    (out / CONFIG_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("changes,match", [
    ({"architecture": {"encoder_expert_dims": [[64, 32, 16]]}}, "encoder_layers.0.moe"),
    ({"architecture": {"decoder_expert_dims": [[32], [64, 32, 32]]}}, "missing"),
    ({"vocab_size": VOCAB + 1}, "embed"),
    ({"format_version": 99}, "format_version"),
    ({"format": "something-else"}, "format"),
    ({"options": {"dropout": 0.1, "no_such_option": 1}}, "no_such_option"),
    ({"special_tokens": {"pad": 1, "unk": 0, "bos": 2, "eos": 3}}, "special_tokens"),
    ({"architecture": {"encoder_top_k": [5]}}, "encoder_top_k"),
])
def test_config_mismatched_to_weights_fails_clearly(model, tmp_path, changes, match):
    out = model.save(tmp_path / "m")
    edit_config(out, **changes)
    with pytest.raises(ValueError, match=match) as err:
        Transformer.load(out)
    assert CONFIG_FILE in str(err.value) or WEIGHTS_FILE in str(err.value)


def test_bad_json_missing_files_and_bad_values(model, tmp_path):
    out = model.save(tmp_path / "m")
    (out / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=CONFIG_FILE):
        Transformer.load(out)
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        Transformer.load(tmp_path / "nowhere")
    out = model.save(tmp_path / "m2")
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        Transformer.load(out)
    out = model.save(tmp_path / "m3")
    state = load_file(str(out / WEIGHTS_FILE))
    state["embed"][5, 0] = float("nan")
    save_file(state, str(out / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="non-finite"):
        Transformer.load(out)


def test_a_huge_tampered_vocab_size_fails_before_allocating(model, tmp_path):
    """vocab_size 4,000,000 would be a 512 MB embedding at d=32: the shapes are checked
    against the safetensors header first, so loading fails without that allocation (peak
    memory measured in a fresh process)."""
    import subprocess
    import sys

    out = model.save(tmp_path / "m")
    edit_config(out, vocab_size=4_000_000)
    code = (
        "import resource, sys\n"
        "from supernet import Transformer\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    Transformer.load({str(out)!r})\n"
        "except ValueError as err:\n"
        "    print('refused', 'embed' in str(err))\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    refused, grown_mb = done.stdout.split("\n")[:2]
    assert refused == "refused True"
    assert int(grown_mb) < 100, done.stdout
