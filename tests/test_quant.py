"""Weight-only per-output-channel quantization of experts (`supernet.quant`).

Oracles: a per-element Python rounding of each row written here, the fp32 expert
(`supernet.functional.expert_ffn`) run on the dequantized weights (exact for the
``weight_only`` int8 kernel), the activation rounding bound for the ``dynamic`` one, and
ONNX Runtime on a graph built by hand for the ``onnx`` one.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supernet import quant
from supernet.functional import ExpertWeights, MoEWeights, expert_ffn, moe_ffn
from supernet.quant import (
    dequantize,
    quantize_expert,
    quantize_weight,
    quantized_expert_ffn,
    quantized_linear,
)


@pytest.fixture
def weight_only(monkeypatch):
    """The exact int8 kernel (int8 weights times fp32 activations)."""
    monkeypatch.setattr(quant, "INT8_KERNEL", "weight_only")


def _expert(d: int, h: int, seed: int) -> ExpertWeights:
    g = torch.Generator().manual_seed(seed)
    return ExpertWeights(torch.randn(h, d, generator=g) * 0.2, torch.randn(h, generator=g) * 0.1,
                         torch.randn(d, h, generator=g) * 0.2, torch.randn(d, generator=g) * 0.1)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_matches_rounding_each_row_by_hand(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 9, generator=g)
    w[2] = 0.0  # an all-zero row
    qw = quantize_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    for r, row in enumerate(w.tolist()):
        amax = max(abs(v) for v in row)
        scale = amax / qmax if amax > 0 else 1.0
        assert qw.scale[r].item() == pytest.approx(scale, rel=1e-6)
        for c, v in enumerate(row):
            expected = max(-qmax, min(qmax, round(v / scale)))
            got = int(qw.q[r, c])
            # float32 vs float64 division may differ exactly at a .5 tie
            assert got == expected or abs(v / scale - round(v / scale)) > 0.4999, (r, c)
            assert abs(got * scale - v) <= scale / 2 + 1e-6
    assert qw.q.dtype == torch.int8 and int(qw.q.abs().max()) == qmax
    assert torch.equal(dequantize(qw)[2], torch.zeros(9))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_expert_equals_fp32_expert_on_dequantized_weights(bits, weight_only):
    w = _expert(d=48, h=96, seed=3)
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(1))
    qe = quantize_expert(w, bits)
    dq = ExpertWeights(dequantize(qe.w1), qe.b1, dequantize(qe.w2), qe.b2)
    want = expert_ffn(x, dq, activation_dropout=0.0, training=False)
    got = quantized_expert_ffn(x, qe)
    # the int8 kernel sums in another order than the fp32 matmul: fp32 rounding only
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and the quantized expert is near the original one (weights within half a step)
    full = expert_ffn(x, w, activation_dropout=0.0, training=False)
    err = (got - full).abs().max().item()
    assert err < (0.05 if bits == 8 else 0.6) * full.abs().max().item()


def test_int8_runs_the_int8_kernel_and_int4_does_not(monkeypatch, weight_only):
    calls = []
    kernel = torch._weight_int8pack_mm

    def spy(*args):
        calls.append(args[1].dtype)
        return kernel(*args)

    monkeypatch.setattr(torch, "_weight_int8pack_mm", spy)
    x = torch.randn(2, 3, 16)  # leading dims are flattened for the kernel and restored
    w = torch.randn(8, 16)
    y8 = quantized_linear(x, quantize_weight(w, 8))
    assert calls == [torch.int8] and y8.shape == (2, 3, 8)
    torch.testing.assert_close(y8, x @ dequantize(quantize_weight(w, 8)).T, rtol=1e-5, atol=1e-5)
    quantized_linear(x, quantize_weight(w, 4))
    assert calls == [torch.int8]  # int4 is simulated on the dequantized matrix


@pytest.mark.skipif(not hasattr(torch.ops.quantized, "linear_dynamic"),
                    reason="this torch has no fbgemm dynamic int8 linear")
def test_dynamic_int8_is_within_the_activation_rounding_bound(monkeypatch):
    monkeypatch.setattr(quant, "INT8_KERNEL", "dynamic")
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 7, 48, generator=g), torch.randn(32, 48, generator=g) * 0.2
    qw = quantize_weight(w, 8)
    exact = x @ dequantize(qw).T
    got = quantized_linear(x, qw)
    # fbgemm quantizes x per tensor to 7 bits (reduce_range) over [min(x, 0), max(x, 0)]:
    # each activation moves by at most one step (half a step, plus the zero point's rounding)
    step = (max(x.max().item(), 0.0) - min(x.min().item(), 0.0)) / 127
    bound = step * dequantize(qw).abs().sum(dim=1)  # [out]
    assert got.shape == exact.shape
    assert ((got - exact).abs() <= bound + 1e-5).all()
    assert not torch.allclose(got, exact, rtol=1e-4, atol=1e-4)  # the activations were rounded
    again = quantized_linear(x, qw)  # the prepacked weight is cached and reused
    assert torch.equal(got, again)


def _ort_dynamic_linear(x: torch.Tensor, w: quant.QuantizedWeight) -> torch.Tensor:
    """ONNX Runtime's DynamicQuantizeLinear + MatMulInteger (u8 x u8, weights + 128) and
    both scales, in a graph built here by hand."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    wq = (w.q.T.to(torch.int16) + 128).to(torch.uint8).numpy()
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "scale"], ["s"]),
             helper.make_node("Mul", ["accf", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wq, "w"), numpy_helper.from_array(w.scale.numpy(), "scale"),
         helper.make_tensor("wz", TensorProto.UINT8, [], [128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("bits", [8, 4])
def test_onnx_kernel_computes_what_onnxruntime_computes(bits, monkeypatch):
    """Kernel "onnx" against ONNX Runtime on a hand-built graph: exact up to fp32 rounding,
    for 2-d and 3-d inputs, all-positive ones (zero point 0), all-zero ones (scale 1) and
    activations exactly halfway between two steps (ORT rounds half to even);
    and within one activation step of the exact product (8-bit, asymmetric)."""
    monkeypatch.setattr(quant, "INT8_KERNEL", "onnx")
    g = torch.Generator().manual_seed(bits)
    qw = quantize_weight(torch.randn(32, 48, generator=g) * 0.2, bits)
    ties = torch.cat([torch.tensor([0.0, 255.0]), torch.arange(46) + 0.5])[None]  # s = 1
    for x in (torch.randn(2, 7, 48, generator=g) * 3 + 1, torch.rand(5, 48, generator=g),
              torch.zeros(3, 48), torch.randn(1, 48, generator=g), ties):
        got = quantized_linear(x, qw)
        torch.testing.assert_close(got, _ort_dynamic_linear(x, qw), rtol=1e-6, atol=1e-6)
        exact = x @ dequantize(qw).T
        step = (max(x.max().item(), 0.0) - min(x.min().item(), 0.0)) / 255
        assert ((got - exact).abs() <= step * dequantize(qw).abs().sum(dim=1) + 1e-5).all()


@pytest.mark.parametrize("kernel", ["onnx", "dynamic"])
def test_both_dispatches_quantize_each_experts_activations_over_its_own_tokens(kernel,
                                                                                monkeypatch):
    """Kernels quantizing activations per call take their range from the rows they get:
    the gather dispatch (the export's) and the index one give each expert its own tokens,
    so they agree, and a token far outside the others' range coarsens its experts only."""
    if kernel == "dynamic" and not hasattr(torch.ops.quantized, "linear_dynamic"):
        pytest.skip("this torch has no fbgemm dynamic int8 linear")
    monkeypatch.setattr(quant, "INT8_KERNEL", kernel)
    g = torch.Generator().manual_seed(3)
    experts = tuple(quantize_expert(_expert(16, h, seed=4 + h), 8) for h in (24, 8, 16))
    w = MoEWeights(torch.randn(3, 16, generator=g), torch.zeros(3), experts, 1)
    x = torch.randn(9, 16, generator=g)
    x[4] *= 50
    gather, _ = moe_ffn(x, w, dispatch="gather")
    index, _ = moe_ffn(x, w, dispatch="index")
    torch.testing.assert_close(gather, index, rtol=1e-6, atol=1e-6)
    picked = torch.softmax(F.linear(x, w.router_w, w.router_b), dim=-1).argmax(dim=1)
    others = picked != picked[4]  # tokens of the experts the wide token does not use
    alone = moe_ffn(x[torch.arange(9) != 4], w, dispatch="gather")[0]
    keep = torch.arange(9) != 4
    torch.testing.assert_close(gather[keep][others[keep]], alone[others[keep]], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize(("bits", "kernel"), [(8, "dynamic"), (8, "weight_only"), (8, "onnx"),
                                             (4, None)])
def test_an_expert_no_token_picks_runs_on_no_rows(bits, kernel, monkeypatch):
    """The gather dispatch runs every expert, an unpicked one on 0 rows: each kernel
    returns [0, d] for it and the layer equals the index dispatch, which skips it."""
    if kernel == "dynamic" and not hasattr(torch.ops.quantized, "linear_dynamic"):
        pytest.skip("this torch has no fbgemm dynamic int8 linear")
    if kernel is not None:
        monkeypatch.setattr(quant, "INT8_KERNEL", kernel)
    g = torch.Generator().manual_seed(5)
    experts = tuple(quantize_expert(_expert(16, h, seed=h), bits) for h in (24, 8, 16))
    never = torch.tensor([0.0, 0.0, -1e4])  # the third expert is never in the top 2
    w = MoEWeights(torch.randn(3, 16, generator=g), never, experts, 2)
    x = torch.randn(6, 16, generator=g)
    assert quantized_expert_ffn(x[:0], experts[2]).shape == (0, 16)
    gather, stats = moe_ffn(x, w, dispatch="gather")
    assert stats.counts.tolist()[2] == 0
    torch.testing.assert_close(gather, moe_ffn(x, w, dispatch="index")[0], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize(("bits", "kernel"), [(8, "dynamic"), (8, "weight_only"), (8, "onnx"),
                                             (4, None)])
def test_cached_kernels_follow_weights_changed_in_place(bits, kernel, monkeypatch):
    # loading weights copies into the same tensors: the cached packed or dequantized
    # matrix must not outlive the values it was made from
    monkeypatch.setattr(quant, "INT8_KERNEL", kernel)
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4, 16, generator=g)
    qw = quantize_weight(torch.randn(8, 16, generator=g), bits)
    quantized_linear(x, qw)
    other = quantize_weight(torch.randn(8, 16, generator=g), bits)
    qw.q.copy_(other.q)
    qw.scale.copy_(other.scale)
    torch.testing.assert_close(quantized_linear(x, qw), quantized_linear(x, other))


def test_unknown_int8_kernel_is_rejected(monkeypatch):
    monkeypatch.setattr(quant, "INT8_KERNEL", "int2")
    with pytest.raises(ValueError, match="INT8_KERNEL.*int2"):
        quantized_linear(torch.randn(2, 16), quantize_weight(torch.randn(8, 16), 8))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"bits must be one of \[4, 8\], got 16"):
        quantize_weight(torch.ones(2, 2), 16)
    with pytest.raises(ValueError, match=r"expected a matrix \[out, in\], got shape \(4,\)"):
        quantize_weight(torch.ones(4), 8)
    assert quant.QUANT_BITS == (4, 8)


# ---- the supernet scores quantized experts (post-training quantization of its slices) -------
def _supernet_and_configs():
    import dataclasses

    from search_spaces import load_space
    from supernet.supertransformer import SuperTransformer

    space = load_space("tiny")
    supernet = SuperTransformer(space, 64, seed=3).eval()
    base = space.largest()
    n_enc = base.encoder_experts
    quantized = dataclasses.replace(
        base,
        encoder_expert_dims=((64, 32, 64),) + base.encoder_expert_dims[1:],
        encoder_expert_bits=((8, 32, 4),) + tuple((8,) * n for n in n_enc[1:]),
        decoder_expert_bits=tuple((4,) + (32,) * (n - 1) for n in base.decoder_experts))
    return supernet, quantized


def _with_dequantized_slices(supernet, config):
    """A copy of ``supernet`` whose quantized experts' slices hold their dequantized values,
    so that running ``config`` at full precision on it is the oracle."""
    import copy

    oracle = copy.deepcopy(supernet)
    with torch.no_grad():
        for side in ("encoder", "decoder"):
            d = getattr(config, f"{side}_embed_dim")
            layers = getattr(oracle, f"{side}_layers")
            for i, (dims, bits) in enumerate(zip(getattr(config, f"{side}_expert_dims"),
                                                 getattr(config, f"{side}_expert_bits"),
                                                 strict=True)):
                moe = layers[i].moe
                for e, (h, b) in enumerate(zip(dims, bits, strict=True)):
                    if b == 32:
                        continue
                    moe.w1[e, :h, :d] = dequantize(quantize_weight(moe.w1[e, :h, :d], b))
                    moe.w2[e, :d, :h] = dequantize(quantize_weight(moe.w2[e, :d, :h], b))
    return oracle


def test_supernet_scores_quantized_experts_as_fp32_on_their_dequantized_slices(weight_only):
    import dataclasses

    supernet, q = _supernet_and_configs()
    full = dataclasses.replace(q, encoder_expert_bits=(), decoder_expert_bits=())
    g = torch.Generator().manual_seed(0)
    src, prev = torch.randint(4, 64, (3, 7), generator=g), torch.randint(4, 64, (3, 5), generator=g)
    with torch.no_grad():
        got, _ = supernet(src, prev, q)
        want, _ = _with_dequantized_slices(supernet, q)(src, prev, full)
        fp32, _ = supernet(src, prev, full)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, fp32, rtol=1e-4, atol=1e-4)  # the bits did change something
    # the same through the seq2seq view (encode, then decode), as scoring and decoding run it
    view = supernet.bind(q)
    with torch.no_grad():
        logits, _ = view.decode(prev, view.encode(src))
    torch.testing.assert_close(logits, got, rtol=1e-5, atol=1e-5)


def test_training_mode_runs_fp32_experts_and_the_cache_follows_the_weights():
    import dataclasses

    from supernet.functional import ExpertWeights as EW

    supernet, q = _supernet_and_configs()
    supernet.train()
    assert all(isinstance(e, EW) for layer in supernet.weights(q).encoder.layers
               for e in layer.moe.experts)
    supernet.eval()
    first = supernet.weights(q).encoder.layers[0].moe.experts[0]
    assert isinstance(first, quant.QuantizedExpert) and first.w1.bits == 8
    assert supernet.weights(q).encoder.layers[0].moe.experts[0] is first  # cached
    with torch.no_grad():  # an optimizer step, in place
        supernet.encoder_layers[0].moe.w1.mul_(2.0)
    again = supernet.weights(q).encoder.layers[0].moe.experts[0]
    assert again is not first
    torch.testing.assert_close(again.w1.scale, 2.0 * first.w1.scale)
    full = dataclasses.replace(q, encoder_expert_bits=(), decoder_expert_bits=())
    assert all(isinstance(e, EW) for layer in supernet.weights(full).encoder.layers
               for e in layer.moe.experts)
