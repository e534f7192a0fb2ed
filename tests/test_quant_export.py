"""The static model with quantized experts: extraction, files, loading, latency, ONNX.

Oracles: the supernet's eval-mode scoring of the same subnet (itself checked against fp32 on
the dequantized slices in test_quant.py), an independent nibble-by-nibble packing, the
nbytes of the tensors in the written file, and hand-made bad files.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search_spaces import load_space
from supernet import quant
from supernet.quant import pack_int4, quantize_weight, unpack_int4
from supernet.supertransformer import SuperTransformer
from supernet.tokens import EOS_ID
from supernet.transformer import QuantExpert, QuantLinear, Transformer

VOCAB = 64


@pytest.fixture(scope="module")
def supernet():
    return SuperTransformer(load_space("tiny"), VOCAB, seed=3).eval()


def _moe_config():
    """Heterogeneous MoE layers with int8, int4 and fp32 experts; an odd hidden size so a
    4-bit row of fc2 packs an odd number of values."""
    base = load_space("tiny").largest()
    return dataclasses.replace(
        base,
        encoder_expert_dims=((64, 32, 63),) + base.encoder_expert_dims[1:],
        encoder_expert_bits=((8, 32, 4),) + tuple((8,) * n for n in base.encoder_experts[1:]),
        decoder_expert_bits=tuple((4,) + (32,) * (n - 1) for n in base.decoder_experts))


def _dense_config(bits: int):
    base = load_space("tiny").smallest()
    return dataclasses.replace(
        base, encoder_expert_bits=tuple((bits,) for _ in base.encoder_expert_dims),
        decoder_expert_bits=tuple((bits,) for _ in base.decoder_expert_dims))


CONFIGS = {"moe": _moe_config, "dense-int8": lambda: _dense_config(8),
           "dense-int4": lambda: _dense_config(4)}


def _inputs():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (3, 7), generator=g)
    src[0, 5:] = 0  # padding
    return src, torch.randint(4, VOCAB, (3, 5), generator=g)


def _full(config):
    return dataclasses.replace(config, encoder_expert_bits=(), decoder_expert_bits=())


# ---- step 1: the extracted static model ---------------------------------------------------


@pytest.mark.parametrize("kernel", quant.INT8_KERNELS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_extracted_model_equals_the_supernets_quantized_scoring(supernet, name, kernel,
                                                                monkeypatch):
    monkeypatch.setattr(quant, "INT8_KERNEL", kernel)
    config = CONFIGS[name]()
    model = supernet.extract(config)
    assert not model.training
    src, prev = _inputs()
    with torch.no_grad():
        want, _ = supernet(src, prev, config)
        got, _ = model(src, prev)
        fp32, _ = supernet(src, prev, _full(config))
        # incremental decoding through the cache, as translate runs it
        enc, cache = model.encode(src), model.new_cache()
        steps = [model.decode(prev[:, t:t + 1], enc, cache=cache)[0] for t in range(prev.shape[1])]
    # the same kernels on the same integers and scales: equal up to the kernel's rounding
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if kernel == "weight_only":
        # the dynamic kernel quantizes each call's activations per tensor, so a step of one
        # token and a teacher-forced pass round differently; the exact kernel must agree
        torch.testing.assert_close(torch.cat(steps, dim=1), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, fp32, rtol=1e-4, atol=1e-4)  # the bits changed the model
    # the low-precision experts hold integers and scales, the 32-bit ones fp32 matrices
    side_bits = [(layer.moe, bits) for layer, bits in zip(
        [*model.encoder_layers, *model.decoder_layers],
        [*config.encoder_expert_bits, *config.decoder_expert_bits], strict=True)]
    for moe, bits in side_bits:
        for expert, b in zip(moe.experts, bits, strict=True):
            if b == 32:
                assert not isinstance(expert, QuantExpert)
                continue
            assert isinstance(expert, QuantExpert) and expert.fc1.bits == b
            assert expert.fc1.qweight.dtype == torch.int8 and expert.fc1.scale.dtype == torch.float32
            qmax = 2 ** (b - 1) - 1
            assert int(expert.fc2.qweight.abs().max()) <= qmax


def test_quantized_experts_hold_the_quantization_of_the_supernets_slices(supernet):
    config = _moe_config()
    expert = supernet.extract(config).encoder_layers[0].moe.experts[2]  # 4 bits, hidden 63
    d = config.encoder_embed_dim
    w1 = supernet.encoder_layers[0].moe.w1[2, :63, :d]
    want = quantize_weight(w1, 4)
    assert torch.equal(expert.fc1.qweight, want.q) and torch.equal(expert.fc1.scale, want.scale)


def test_full_precision_subnets_extract_as_before(supernet):
    full = load_space("tiny").largest()
    spelled = dataclasses.replace(full, encoder_expert_bits=tuple(
        (32,) * n for n in full.encoder_experts))
    assert spelled == full and spelled.key() == full.key()
    model = supernet.extract(spelled)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    state = model.state_dict()
    assert all(t.is_floating_point() for t in state.values())
    assert not any(k.endswith(("qweight", "scale")) for k in state)
    src, prev = _inputs()
    with torch.no_grad():
        assert torch.equal(model(src, prev)[0], supernet(src, prev, full)[0])


def test_random_init_is_the_quantization_of_the_fp32_init():
    config = _moe_config()
    q, full = Transformer(config, VOCAB, seed=5), Transformer(_full(config), VOCAB, seed=5)
    qs, fs = q.state_dict(), full.state_dict()
    fc1 = "encoder_layers.0.moe.experts.0.fc1"
    want = quantize_weight(fs[f"{fc1}.weight"], 8)
    assert torch.equal(qs[f"{fc1}.qweight"], want.q) and torch.equal(qs[f"{fc1}.scale"], want.scale)
    # every tensor that is not an expert below 32 bits is the same draw
    shared = [k for k in fs if k in qs and qs[k].shape == fs[k].shape]
    assert "embed" in shared and all(torch.equal(qs[k], fs[k]) for k in shared)
    assert q.count_params() == full.count_params() == supernet_counts(config)


def supernet_counts(config):
    from supernet.params import count_params

    return count_params(config, VOCAB)


def test_a_quantized_model_refuses_training_mode(supernet):
    model = supernet.extract(_dense_config(8)).train()
    src, prev = _inputs()
    with pytest.raises(ValueError, match="quantized expert runs in eval mode only"):
        model(src, prev)


# ---- int4 packing --------------------------------------------------------------------------


@pytest.mark.parametrize("cols", [1, 6, 7])
def test_pack_int4_puts_two_values_per_byte_low_nibble_first(cols):
    g = torch.Generator().manual_seed(cols)
    q = torch.randint(-7, 8, (3, cols), generator=g, dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (3, (cols + 1) // 2)
    for r in range(3):
        for j in range(cols):
            nibble = (int(packed[r, j // 2]) >> (4 * (j % 2))) & 0xF
            assert nibble - 8 == int(q[r, j])
    assert torch.equal(unpack_int4(packed, cols), q)
    if cols % 2:  # the pad nibble of an odd row holds the value 0 (stored as 8), not -8
        assert (packed[:, -1] >> 4 == 8).all()
    with pytest.raises(ValueError, match="unpack_int4"):
        unpack_int4(packed, cols + 2)
    assert pack_int4(q.to("meta")).shape == packed.shape
    assert quant.QUANT_BITS == (4, 8)


# ---- step 2: files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_saved_file_round_trips_and_its_bytes_are_weight_bytes(supernet, name, tmp_path):
    from safetensors import safe_open

    from supernet.params import weight_bytes

    config = CONFIGS[name]()
    model = supernet.extract(config)
    out = model.save(tmp_path / "m")
    loaded = Transformer.load(out)
    src, prev = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(src, prev)[0], model(src, prev)[0])
    # independent count: the nbytes of the tensors the file holds (scales included)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    nbytes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    want = weight_bytes(config, VOCAB, normalize_before=model.options.normalize_before)
    assert nbytes.pop("embed") == want.embedding
    assert sum(nbytes.values()) == want.weights
    # int4 values are packed two per byte in the file (uint8), int8 one per byte
    bits = [b for layer in config.encoder_expert_bits + config.decoder_expert_bits for b in layer]
    dtypes = [t.dtype for k, t in tensors.items() if k.endswith("qweight")]
    assert dtypes.count(torch.uint8) == 2 * bits.count(4)
    assert dtypes.count(torch.int8) == 2 * bits.count(8)
    full = supernet.extract(_full(config)).save(tmp_path / "full")
    assert (out / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size


def _rewrite(path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


FC1 = "encoder_layers.0.moe.experts.2.fc1"  # the 4-bit expert of _moe_config


@pytest.mark.parametrize("damage,match", [
    (lambda s: s.pop(f"{FC1}.scale"), rf"tensor '{FC1}.scale' is missing"),
    (lambda s: s.update({f"{FC1}.qweight": torch.zeros(63, 32, dtype=torch.uint8)}),
     rf"tensor '{FC1}.qweight' has shape \(63, 32\).*implies \(63, 16\)"),
    (lambda s: s.update({f"{FC1}.qweight": torch.zeros(63, 16)}),
     rf"tensor '{FC1}.qweight' is torch.float32.*torch.uint8"),
    (lambda s: s.update({f"{FC1}.scale": torch.zeros(62)}),
     rf"tensor '{FC1}.scale' has shape \(62,\)"),
])
def test_bad_quantized_files_name_the_file_and_the_key(supernet, tmp_path, damage, match):
    out = supernet.extract(_moe_config()).save(tmp_path / "m")
    _rewrite(out / "model.safetensors", damage)
    with pytest.raises(ValueError, match=match) as err:
        Transformer.load(out)
    assert "model.safetensors" in str(err.value)


def test_bits_in_config_json_that_disagree_with_the_file_fail(supernet, tmp_path):
    import json

    out = supernet.extract(_moe_config()).save(tmp_path / "m")
    meta = json.loads((out / "config.json").read_text())
    meta["architecture"]["encoder_expert_bits"][0] = [8, 32, 8]  # the file has 4 bits
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"'{FC1}.qweight' has shape \(63, 16\), .*config.json"
                                         r" implies \(63, 32\)"):
        Transformer.load(out)


def test_cli_on_a_bad_quantized_model_dir_exits_2_and_writes_nothing(supernet, tmp_path,
                                                                     capsys):
    import shutil

    from search_helpers import make_data

    from automoe.cli import main

    data = make_data(tmp_path)
    out = supernet.extract(_moe_config()).save(tmp_path / "m")
    shutil.copyfile(data / "spm.model", out / "spm.model")
    _rewrite(out / "model.safetensors", lambda s: s.pop(f"{FC1}.scale"))
    src, hyp = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("The cat.\n", encoding="utf-8")
    assert main(["translate", str(out), "--input", str(src), "--output", str(hyp),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and f"{FC1}.scale" in err
    assert not hyp.exists()


# ---- step 3: measured latency runs the quantized kernels ------------------------------------


@pytest.mark.parametrize("kernel", quant.INT8_KERNELS)
@pytest.mark.parametrize("weights", ["supernet", "random"])
def test_measured_latency_runs_the_int8_kernel_not_a_dequantized_matmul(supernet, weights,
                                                                        kernel, monkeypatch):
    """`measure_subnet` (``automoe latency measure``) builds the model as the search's
    latency does (`SuperTransformer.extract`, or a random `Transformer`): its int8 experts
    must reach the int8 kernel in use, and nothing may be dequantized."""
    from automoe.costs.latency import LatencyProtocol
    from automoe.costs.subnet_latency import measure_subnet

    monkeypatch.setattr(quant, "INT8_KERNEL", kernel)
    kernel_calls, dequantized = [], []
    weight_only, packed, dequantize = torch._weight_int8pack_mm, quant._packed, quant.dequantize
    emulated = quant.onnx_int8_linear

    def spy_weight_only(x, q, scale):
        kernel_calls.append(tuple(q.shape))
        return weight_only(x, q, scale)

    def spy_packed(w):  # the dynamic kernel fetches its packed weight on every call
        kernel_calls.append(tuple(w.q.shape))
        return packed(w)

    def spy_emulated(x, q, scale, bias):
        kernel_calls.append(tuple(q.shape))
        return emulated(x, q, scale, bias)

    monkeypatch.setattr(torch, "_weight_int8pack_mm", spy_weight_only)
    monkeypatch.setattr(quant, "onnx_int8_linear", spy_emulated)
    monkeypatch.setattr(quant, "_packed", spy_packed)
    monkeypatch.setattr(quant, "dequantize", lambda w: dequantized.append(w) or dequantize(w))
    config = _dense_config(8)
    protocol = LatencyProtocol(vocab_size=VOCAB, src_len=5, tgt_len=3, beam=2, warmup=0, runs=1)
    measure_subnet(config, protocol, supernet=supernet if weights == "supernet" else None)
    d_enc, d_dec = config.encoder_embed_dim, config.decoder_embed_dim
    want = {(h, d) for h, d in [(config.encoder_expert_dims[0][0], d_enc),
                                (config.decoder_expert_dims[0][0], d_dec)]}
    want |= {(d, h) for h, d in want}
    assert set(kernel_calls) == want and not dequantized
    # one call per matrix per forward: 2 per encoder layer per encode, 2 per decoder layer
    # per step
    assert len(kernel_calls) == 2 * config.encoder_layers + 2 * config.decoder_layers * 3


# ---- step 4: quantized experts in ONNX Runtime ----------------------------------------------


@pytest.mark.parametrize("name", ["moe", "dense-int8"])
def test_quantized_experts_in_onnxruntime_equal_torch_on_the_onnx_kernel(supernet, name,
                                                                        tmp_path, monkeypatch):
    """The exported graph holds the experts' integers (uint8, one per weight, no fp32 copy)
    and ONNX Runtime computes what the torch model computes on kernel "onnx": logits
    through the cache within 1e-4, greedy and beam translations token for token. "moe" has
    int8, int4 and fp32 experts behind one router (the export's gather dispatch and torch's
    index dispatch must each quantize an expert's activations over its own tokens)."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from automoe.decoding import beam_search, greedy_decode
    from automoe.onnx_export import export_onnx
    from automoe.onnx_runtime import OrtTransformer

    monkeypatch.setattr(quant, "INT8_KERNEL", "onnx")
    model = supernet.extract(CONFIGS[name]())
    out = export_onnx(model, tmp_path / "onnx")
    inits = [numpy_helper.to_array(t) for graph in ("encoder.onnx", "decoder_step.onnx")
             for t in onnx.load(str(out / graph)).graph.initializer]
    for linear in (m for m in model.modules() if isinstance(m, QuantLinear)):
        q = linear.qweight.T.numpy()  # [in, out], the graph's layout
        stored = (q.astype("int16") + 128).astype("uint8")
        assert any(a.shape == q.shape and (a == stored).all() for a in inits)
        fp32 = (linear.qweight * linear.scale[:, None]).numpy()
        assert not any(a.dtype.name == "float32" and a.size == q.size
                       and any(np.allclose(a.reshape(-1), w.reshape(-1)) for w in (fp32, fp32.T))
                       for a in inits)
    runtime = OrtTransformer(out, providers=["CPUExecutionProvider"], threads=1)
    src, prev = _inputs()
    with torch.no_grad():
        enc, cache = model.encode(src), model.new_cache()
        ort_enc, ort_cache = runtime.encode(src), runtime.new_cache()
        for t in range(prev.shape[1]):  # the same rows per step: dynamic quantization sees them
            want, _ = model.decode(prev[:, t:t + 1], enc, cache=cache)
            got, _ = runtime.decode(prev[:, t:t + 1], ort_enc, cache=ort_cache)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    g = torch.Generator().manual_seed(5)
    src = torch.randint(4, VOCAB, (20, 9), generator=g)
    src[:, -1] = EOS_ID
    src[::3, 5:] = 0  # shorter sentences, padded
    src[::3, 4] = EOS_ID
    for decode in (lambda m: greedy_decode(m, src, max_len_b=5),
                   lambda m: beam_search(m, src, beam=3, lenpen=0.6, max_len_b=5)):
        assert [h.tokens for h in decode(runtime)] == [h.tokens for h in decode(model)]


def test_training_a_quantized_subnet_is_refused_naming_its_bits(tmp_path):
    from automoe.training.presets import get_preset
    from automoe.training.runs import RunSettings, train_subnet

    settings = RunSettings(kind="subnet", data_dir=str(tmp_path / "data"),
                           options=get_preset("demo", "subnet"), subnet=_dense_config(8))
    with pytest.raises(ValueError, match=r"experts below 32 bits \(encoder_expert_bits \[\[8\]\]"
                                         r".*training runs experts at 32 bits"):
        train_subnet(settings, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()
