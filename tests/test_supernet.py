"""SuperTransformer vs its extracted static Transformers: same logits (full forward and
incremental decoding), no leakage between subnets, gradients only on active slices,
parameter counts, dropout scaling, option variants, bad subnets. Oracles outside the shared
model code (`supernet.core` runs on both sides of the extract test): hand-written leading
slices of every randomised tensor, NaN in the encoder states cross-attention must not read,
and `torch.nn.Transformer` holding a dense post-LN subnet's weights."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from search_spaces import SubnetConfig, load_space
from supernet import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    ModelOptions,
    SuperTransformer,
    Transformer,
)

VOCAB = 40
TIGHT = {"rtol": 1e-6, "atol": 1e-6}
STEP = {"rtol": 1e-5, "atol": 1e-5}  # incremental vs full: other matmul shapes

HETERO_A = SubnetConfig(  # heterogeneous MoE, top-1 and top-2 on both sides, d_enc != d_dec
    encoder_embed_dim=24, decoder_embed_dim=32, qkv_dim=32,
    encoder_expert_dims=((64, 32, 32), (32, 64)), encoder_heads=(4, 2), encoder_top_k=(2, 1),
    decoder_expert_dims=((32, 64, 64), (64, 32)), decoder_heads=(2, 4),
    decoder_cross_heads=(4, 2), decoder_ende_attn=(2, 1), decoder_top_k=(1, 2))
HETERO_B = SubnetConfig(
    encoder_embed_dim=32, decoder_embed_dim=24, qkv_dim=32,
    encoder_expert_dims=((32, 64),), encoder_heads=(2,), encoder_top_k=(2,),
    decoder_expert_dims=((64,), (32, 64, 32)), decoder_heads=(4, 4),
    decoder_cross_heads=(2, 4), decoder_ende_attn=(2, 2), decoder_top_k=(1, 2))
SMALL = SubnetConfig(  # one layer each, dense, smaller widths
    encoder_embed_dim=24, decoder_embed_dim=24, qkv_dim=32,
    encoder_expert_dims=((32,),), encoder_heads=(2,), encoder_top_k=(1,),
    decoder_expert_dims=((32, 64),), decoder_heads=(2,), decoder_cross_heads=(4,),
    decoder_ende_attn=(1,), decoder_top_k=(1,))


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


@pytest.fixture(scope="module")
def supernet(space):
    return SuperTransformer(space, VOCAB, seed=1).eval()


def subnets(space) -> list[SubnetConfig]:
    rng = random.Random(7)
    return [HETERO_A, HETERO_B, space.largest(), space.smallest()] + [
        space.sample(rng) for _ in range(5)]


def batch(seed: int = 0, b: int = 3, s: int = 7, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(EOS_ID + 1, VOCAB, (b, s), generator=g)
    prev = torch.randint(EOS_ID + 1, VOCAB, (b, t), generator=g)
    src[:, -1] = EOS_ID
    src[0, 4] = EOS_ID
    src[0, 5:] = PAD_ID  # a shorter source
    prev[:, 0] = BOS_ID
    prev[1, 4:] = PAD_ID  # a shorter target
    return src, prev


def incremental(model, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    enc = model.encode(src)
    cache = model.new_cache()
    steps = [model.decode(prev[:, i : i + 1], enc, cache=cache)[0] for i in range(prev.shape[1])]
    return torch.cat(steps, dim=1)


def test_extract_equals_supernet_in_full_and_incremental_decoding(space, supernet):
    src, prev = batch()
    for config in subnets(space):
        logits, aux = supernet(src, prev, config)
        static = supernet.extract(config)
        assert not static.training and isinstance(static, Transformer)
        s_logits, s_aux = static(src, prev)
        torch.testing.assert_close(s_logits, logits, **TIGHT)
        torch.testing.assert_close(s_aux.load_balance, aux.load_balance, **TIGHT)
        assert s_aux.routing_counts() == aux.routing_counts()
        torch.testing.assert_close(incremental(supernet.bind(config), src, prev), logits, **STEP)
        torch.testing.assert_close(incremental(static, src, prev), logits, **STEP)


def test_cache_accepts_chunks_and_empty_batches(supernet):
    src, prev = batch(seed=8)
    full, _ = supernet(src, prev, HETERO_A)
    view = supernet.bind(HETERO_A)
    enc = view.encode(src)
    cache = view.new_cache()
    head, _ = view.decode(prev[:, :3], enc, cache=cache)  # a 3-token prefix in one call
    tail = [view.decode(prev[:, i : i + 1], enc, cache=cache)[0] for i in range(3, 6)]
    assert cache.length == 6
    torch.testing.assert_close(torch.cat([head, *tail], 1), full, **STEP)
    none = torch.zeros(0, dtype=torch.long)
    cache.reorder(none)
    logits, _ = view.decode(prev[:0, :1], enc.index_select(none), cache=cache)
    assert logits.shape == (0, 1, VOCAB)

def test_routing_counts_cover_every_real_token(supernet):
    src, prev = batch()
    _, aux = supernet(src, prev, HETERO_A)
    enc, dec = aux.routing_counts()
    n_src, n_tgt = int(src.ne(PAD_ID).sum()), int(prev.ne(PAD_ID).sum())
    assert [sum(c) for c in enc] == [n_src * k for k in HETERO_A.encoder_top_k]
    assert [sum(c) for c in dec] == [n_tgt * k for k in HETERO_A.decoder_top_k]
    assert [len(c) for c in enc] == list(HETERO_A.encoder_experts)
    assert aux.moe_layers == 4 and float(aux.load_balance.detach()) > 0


def test_beam_reordering_matches_full_forward_of_reordered_rows(supernet):
    src, prev = batch(seed=3, b=3, t=5)
    view = supernet.bind(HETERO_B)
    enc = view.encode(src)
    cache = view.new_cache()
    for i in range(prev.shape[1] - 1):
        view.decode(prev[:, i : i + 1], enc, cache=cache)
    order = torch.tensor([2, 0, 0, 1])  # reorder, duplicate and drop nothing
    enc = enc.index_select(order)
    cache.reorder(order)
    last, _ = view.decode(prev[order, -1:], enc, cache=cache)
    full, _ = supernet(src[order], prev[order], HETERO_B)
    torch.testing.assert_close(last[:, 0], full[:, -1], **STEP)


def test_no_leakage_between_subnets(space, supernet):
    src, prev = batch(seed=1)
    configs = subnets(space)
    alone = {c: supernet(src, prev, c)[0] for c in configs}
    fresh = copy.deepcopy(supernet)
    for a, b in zip(configs, reversed(configs), strict=True):  # interleaved, other order
        torch.testing.assert_close(fresh(src, prev, a)[0], alone[a], rtol=0, atol=0)
        torch.testing.assert_close(fresh(src, prev, b)[0], alone[b], rtol=0, atol=0)
    # two incremental decodes interleaved step by step, each with its own cache
    va, vb = supernet.bind(HETERO_A), supernet.bind(SMALL)
    ea, eb = va.encode(src), vb.encode(src)
    ca, cb = va.new_cache(), vb.new_cache()
    outs_a, outs_b = [], []
    for i in range(prev.shape[1]):
        outs_a.append(va.decode(prev[:, i : i + 1], ea, cache=ca)[0])
        outs_b.append(vb.decode(prev[:, i : i + 1], eb, cache=cb)[0])
    torch.testing.assert_close(torch.cat(outs_a, 1), alone[HETERO_A], **STEP)
    torch.testing.assert_close(torch.cat(outs_b, 1), supernet(src, prev, SMALL)[0], **STEP)


def active_region(name: str, shape: torch.Size, c: SubnetConfig) -> torch.Tensor:
    """Hand-written slicing rule: True where parameter `name` is used by subnet `c`."""
    mask = torch.zeros(shape, dtype=torch.bool)
    de, dd, q = c.encoder_embed_dim, c.decoder_embed_dim, c.qkv_dim
    if name == "embed":
        mask[:, : max(de, dd)] = True
        return mask
    parts = name.split(".")
    side, layer = parts[0].split("_")[0], int(parts[1]) if parts[1].isdigit() else None
    if parts[0] in ("encoder_norm", "decoder_norm"):
        mask[: de if side == "encoder" else dd] = True
        return mask
    dims = c.encoder_expert_dims if side == "encoder" else c.decoder_expert_dims
    if layer >= len(dims):
        return mask  # an unused layer
    d = de if side == "encoder" else dd
    module, leaf = parts[2], parts[-1]
    if module.endswith("norm"):
        mask[:d] = True
    elif module in ("self_attn", "cross_attn"):
        d_kv = de if module == "cross_attn" else d
        rows = {"q_w": (q, d), "k_w": (q, d_kv), "v_w": (q, d_kv), "o_w": (d, q),
                "q_b": (q,), "k_b": (q,), "v_b": (q,), "o_b": (d,)}[leaf]
        mask[tuple(slice(0, r) for r in rows)] = True
    else:  # moe
        experts = dims[layer]
        n = len(experts)
        if leaf == "router_w" and n > 1:
            mask[:n, :d] = True
        elif leaf == "router_b" and n > 1:
            mask[:n] = True
        for e, h in enumerate(experts):
            region = {"w1": (h, d), "b1": (h,), "w2": (d, h), "b2": (d,)}.get(leaf)
            if region:
                mask[(e, *(slice(0, r) for r in region))] = True
    return mask


@pytest.mark.parametrize("config", [SMALL, HETERO_A, HETERO_B], ids=["small", "a", "b"])
def test_gradients_only_on_active_slices(space, config):
    model = SuperTransformer(space, VOCAB, options=ModelOptions(dropout=0.0), seed=2).train()
    src, prev = batch(seed=2)
    logits, aux = model(src, prev, config)
    (logits.logsumexp(-1).sum() + aux.load_balance + aux.z_loss).backward()
    used = 0
    for name, p in model.named_parameters():
        region = active_region(name, p.shape, config)
        if p.grad is None:
            assert not region.any() or name.endswith(("router_w", "router_b")), name
            continue
        assert not p.grad[~region].any(), f"{name}: gradient outside the active slice"
        if not name.startswith(("encoder_layers", "decoder_layers")) or "moe" not in name:
            assert p.grad[region].any() or "_b" in name or "bias" in name, name
        used += int(region.sum())
    # the hand-written active region is exactly the extracted model's size
    assert used == model.extract(config).count_params().total


def test_unused_inactive_weights_are_never_read(space):
    model = SuperTransformer(space, VOCAB, seed=4).eval()
    src, prev = batch(seed=4)
    ref, _ = model(src, prev, HETERO_B)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p[~active_region(name, p.shape, HETERO_B)] = float("nan")
    out, aux = model(src, prev, HETERO_B)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert torch.isfinite(aux.load_balance)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_param_counts_agree_with_extracted_tensors(space, pre_ln):
    model = SuperTransformer(space, VOCAB, options=ModelOptions(normalize_before=pre_ln))
    for config in subnets(space):
        counts = model.count_params(config)
        static = model.extract(config)
        actual = static.count_params()
        assert (counts.total, counts.hat, counts.embedding) == (
            actual.total, actual.hat, actual.embedding)
        assert counts.active == pytest.approx(actual.active, rel=1e-12)
        assert counts.total == sum(p.numel() for p in static.parameters())
        assert counts.hat == counts.total - VOCAB * max(config.encoder_embed_dim,
                                                        config.decoder_embed_dim)
        if config.is_dense:
            assert counts.active == counts.total
    # expected active parameters of one heterogeneous layer, by hand: top-1 of experts 64, 32
    one = SubnetConfig.from_dict({**SMALL.to_dict(), "decoder_expert_dims": [[64, 32]]})
    d = one.decoder_embed_dim
    expert = {h: 2 * h * d + h + d for h in (64, 32)}
    c = model.count_params(one)
    assert c.total - c.active == pytest.approx((expert[64] + expert[32]) / 2)


def test_pre_ln_extract_and_incremental(space):
    model = SuperTransformer(space, VOCAB, options=ModelOptions(normalize_before=True)).eval()
    src, prev = batch(seed=5)
    for config in (HETERO_A, HETERO_B):
        logits, _ = model(src, prev, config)
        static = model.extract(config)
        assert static.encoder_norm is not None
        torch.testing.assert_close(static(src, prev)[0], logits, **TIGHT)
        torch.testing.assert_close(incremental(static, src, prev), logits, **STEP)


def test_dropout_scales_with_width_and_extract_keeps_it(space):
    opts = ModelOptions(dropout=0.3, activation_dropout=0.2, attention_dropout=0.1,
                        router_jitter=0.05)
    model = SuperTransformer(space, VOCAB, options=opts).train()
    run = model.run_settings(HETERO_A, 0)  # encoder width 24 of 32
    assert run.dropout == pytest.approx(0.3 * 24 / 32)
    assert run.activation_dropout == pytest.approx(0.2 * 24 / 32)
    assert run.attention_dropout == pytest.approx(0.1)
    assert model.run_settings(HETERO_A, 1).dropout == pytest.approx(0.3)
    static = model.extract(HETERO_A)
    assert static.training
    assert static._run(0) == run
    # a model built from scratch uses the rates as given (its own width is the reference)
    assert Transformer(HETERO_A, VOCAB, options=opts)._run(0).dropout == 0.3
    # same random stream, same dropout masks and router jitter: identical training outputs
    src, prev = batch(seed=6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        a, aux_a = model(src, prev, HETERO_A)
        torch.manual_seed(11)
        b, aux_b = static(src, prev)
        torch.manual_seed(12)
        c, _ = static(src, prev)
    torch.testing.assert_close(a, b, **TIGHT)
    torch.testing.assert_close(aux_a.z_loss, aux_b.z_loss, **TIGHT)
    assert not torch.allclose(b, c)


def test_subnet_that_does_not_fit_is_rejected(supernet):
    big = SubnetConfig.from_dict({**SMALL.to_dict(), "encoder_embed_dim": 48})
    with pytest.raises(ValueError, match="encoder_embed_dim"):
        supernet(*batch(), big)
    many = SubnetConfig.from_dict({**SMALL.to_dict(), "decoder_expert_dims": [[8, 8, 8, 8]]})
    with pytest.raises(ValueError, match=r"decoder_expert_dims\[0\] \(experts\)"):
        supernet.bind(many)
    wide = SubnetConfig.from_dict({**SMALL.to_dict(), "encoder_expert_dims": [[128]]})
    with pytest.raises(ValueError, match=r"encoder_expert_dims\[0\]"):
        supernet.extract(wide)
    with pytest.raises(ValueError, match="max_positions"):
        SuperTransformer(supernet.dims, VOCAB, options=ModelOptions(max_positions=4))(
            *batch(), SMALL)


def test_bf16_autocast_forward_on_cpu(supernet):
    src, prev = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux = supernet(src, prev, HETERO_A)
    ref, _ = supernet(src, prev, HETERO_A)
    assert aux.load_balance.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert (logits.float() - ref).abs().max() < 0.25  # bf16 rounding, same function


def test_shared_positions_slice_one_table_and_extract_keeps_it(space, tmp_path):
    """positions_dim: every width adds the first d columns of one 32-wide sinusoid (HAT);
    the extracted and the saved/loaded static models compute exactly the supernet's view;
    options without the key keep the per-width sinusoid."""
    from supernet.functional import sinusoidal_positions

    wide = max(space.supernet.encoder_embed_dim, space.supernet.decoder_embed_dim)
    shared = SuperTransformer(space, VOCAB, options=ModelOptions(positions_dim=wide),
                              seed=1).eval()
    own = SuperTransformer(space, VOCAB, seed=1).eval()
    src, prev = batch(seed=3)
    for config in (HETERO_A, HETERO_B, SMALL):
        logits, _ = shared(src, prev, config)
        static = shared.extract(config)
        assert static.options.positions_dim == wide
        torch.testing.assert_close(static(src, prev)[0], logits, **TIGHT)
        torch.testing.assert_close(incremental(static, src, prev), logits, **STEP)
        loaded = Transformer.load(static.save(tmp_path / config.key()[:12]))
        torch.testing.assert_close(loaded(src, prev)[0], logits, **TIGHT)
        # a width of 24 < 32 sees a different position signal than its own sinusoid
        assert not torch.allclose(own(src, prev, config)[0], logits, atol=1e-3)
    # at the table's own width the two options coincide
    torch.testing.assert_close(own(src, prev, space.largest())[0],
                               shared(src, prev, space.largest())[0], **TIGHT)
    # what the encoder adds: embedding * sqrt(d) + the first d columns of the wide table
    table = shared.weights(SMALL).embed[:, :24]
    got = torch.nn.functional.embedding(src, table, padding_idx=PAD_ID) * 24 ** 0.5
    expected = got + sinusoidal_positions(src.shape[1], wide)[:, :24]
    from supernet import core

    run = shared.run_settings(SMALL, 0)
    torch.testing.assert_close(core._embed(src, table, offset=0, run=run), expected, **TIGHT)
    assert not torch.allclose(sinusoidal_positions(7, wide)[:, :24], sinusoidal_positions(7, 24))
    # older option dicts (no key) mean per-width sinusoids, and to_dict keeps them key-free
    old = own.options.to_dict()
    assert "positions_dim" not in old
    assert ModelOptions.from_dict(old).positions_dim is None
    assert ModelOptions.from_dict(shared.options.to_dict()).positions_dim == wide
    with pytest.raises(ValueError, match="positions_dim 16 is narrower"):
        SuperTransformer(space, VOCAB, options=ModelOptions(positions_dim=16))
    with pytest.raises(ValueError, match="positions_dim"):
        ModelOptions.from_dict({"positions_dim": 1.5})


def test_bf16_autocast_backward_on_cpu_keeps_fp32_gradients(space):
    """A training pass under CPU autocast (TrainConfig.cpu_bf16): fp32 weights and
    gradients, close to the fp32 pass's gradients."""
    from supernet.training.loss import label_smoothed_nll

    model = SuperTransformer(space, VOCAB, options=ModelOptions(dropout=0.0), seed=3).train()
    src, prev = batch(seed=9)
    target = torch.roll(prev, -1, dims=1).masked_fill(prev.eq(PAD_ID), PAD_ID)
    grads = []
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, aux = model(src, prev, HETERO_A)
        out = label_smoothed_nll(logits, target, epsilon=0.1)
        (out.loss / out.ntokens + 0.01 * aux.load_balance).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                if p.grad is not None]))
        assert logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
    fp32, bf16 = grads
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    cos = torch.nn.functional.cosine_similarity(fp32, bf16, dim=0)
    assert cos > 0.99


# ---- independent oracles: tensors by hand, attention spans, torch.nn.Transformer ----------

def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Adds N(0, 0.2^2) noise to every parameter (biases start at zero and norms at one,
    which would hide a bias or norm read from the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_every_extracted_tensor_is_the_leading_slice_of_its_own_supernet_tensor(space):
    model = randomized(SuperTransformer(space, VOCAB, seed=3), seed=4).eval()
    src, prev = batch(seed=4)
    for config in (HETERO_A, HETERO_B):
        static = model.extract(config)
        q, de = config.qkv_dim, config.encoder_embed_dim
        for side in ("encoder", "decoder"):
            d = getattr(config, f"{side}_embed_dim")
            for i, dims in enumerate(getattr(config, f"{side}_expert_dims")):
                sup, ext = getattr(model, f"{side}_layers")[i], getattr(static, f"{side}_layers")[i]
                for e, h in enumerate(dims):  # expert e: its own tensors, never expert 0's
                    fc1, fc2 = ext.moe.experts[e].fc1, ext.moe.experts[e].fc2
                    assert torch.equal(fc1.weight, sup.moe.w1[e, :h, :d]), (side, i, e)
                    assert torch.equal(fc1.bias, sup.moe.b1[e, :h]), (side, i, e)
                    assert torch.equal(fc2.weight, sup.moe.w2[e, :d, :h]), (side, i, e)
                    assert torch.equal(fc2.bias, sup.moe.b2[e, :d]), (side, i, e)
                if len(dims) > 1:
                    assert torch.equal(ext.moe.router.weight, sup.moe.router_w[:len(dims), :d])
                    assert torch.equal(ext.moe.router.bias, sup.moe.router_b[:len(dims)])
                attns = [("self_attn", d)] + ([("cross_attn", de)] if side == "decoder" else [])
                for name, d_kv in attns:
                    a, s = getattr(ext, name), getattr(sup, name)
                    for proj, w, b, rows, cols in (("q_proj", s.q_w, s.q_b, q, d),
                                                   ("k_proj", s.k_w, s.k_b, q, d_kv),
                                                   ("v_proj", s.v_w, s.v_b, q, d_kv),
                                                   ("out_proj", s.o_w, s.o_b, d, q)):
                        assert torch.equal(getattr(a, proj).weight, w[:rows, :cols]), proj
                        assert torch.equal(getattr(a, proj).bias, b[:rows]), proj
        torch.testing.assert_close(static(src, prev)[0], model(src, prev, config)[0], **TIGHT)


def test_cross_attention_reads_only_the_last_encoder_layers(space):
    """With ende_attn = 1 every decoder layer reads only the last encoder layer: NaN in the
    other encoder state changes nothing; with ende_attn = 2 it reaches the logits."""
    import dataclasses

    model = randomized(SuperTransformer(space, VOCAB, seed=5), seed=6).eval()
    src, prev = batch(seed=5)
    last_only = dataclasses.replace(HETERO_A, decoder_ende_attn=(1, 1))
    for m in (model.bind(last_only), model.extract(last_only)):
        enc = m.encode(src)
        assert len(enc.states) == 2
        ref, _ = m.decode(prev, enc)
        poisoned = dataclasses.replace(
            enc, states=(torch.full_like(enc.states[0], float("nan")), enc.states[1]))
        out, _ = m.decode(prev, poisoned)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        cache = m.new_cache()
        steps = [m.decode(prev[:, i:i + 1], poisoned, cache=cache)[0]
                 for i in range(prev.shape[1])]
        torch.testing.assert_close(torch.cat(steps, dim=1), ref, **STEP)
    both = dataclasses.replace(HETERO_A, decoder_ende_attn=(2, 1))
    enc = model.bind(both).encode(src)
    poisoned = dataclasses.replace(
        enc, states=(torch.full_like(enc.states[0], float("nan")), enc.states[1]))
    assert torch.isnan(model.bind(both).decode(prev, poisoned)[0]).all()


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """[length, dim] positions 0.. as fairseq lays them out: sin(p * w_i) in the first half,
    cos(p * w_i) in the second, w_i = 10000^(-i / (dim/2 - 1)); written here independently."""
    half = dim // 2
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (half - 1))
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)


def test_dense_post_ln_subnet_equals_torch_nn_transformer(space):
    """Oracle outside our model code: a dense post-LN subnet's weights copied into
    `torch.nn.Transformer` (ReLU, post-LN, eval) give the same teacher-forced logits.

    Our documented conventions, bridged here in the test: the shared embedding times
    sqrt(d) plus sinusoids (positions from 0), the output projection tied to the embedding,
    and no final layer norm per stack in post-LN (`ModelOptions.normalize_before`), so
    nn.Transformer's final norms are removed."""
    d, heads, hidden, layers = 32, 4, 64, 2
    dense = SubnetConfig(
        encoder_embed_dim=d, decoder_embed_dim=d, qkv_dim=d,
        encoder_expert_dims=((hidden,),) * layers, encoder_heads=(heads,) * layers,
        encoder_top_k=(1,) * layers, decoder_expert_dims=((hidden,),) * layers,
        decoder_heads=(heads,) * layers, decoder_cross_heads=(heads,) * layers,
        decoder_ende_attn=(1,) * layers, decoder_top_k=(1,) * layers)
    supernet = SuperTransformer(space, VOCAB, seed=7).double()
    supernet = randomized(supernet, seed=8).eval()
    ours = supernet.extract(dense)

    ref = torch.nn.Transformer(d_model=d, nhead=heads, num_encoder_layers=layers,
                               num_decoder_layers=layers, dim_feedforward=hidden, dropout=0.0,
                               activation="relu", batch_first=True, norm_first=False,
                               dtype=torch.float64).eval()
    ref.encoder.norm = ref.decoder.norm = None

    def attn(dst: torch.nn.MultiheadAttention, src) -> None:
        dst.in_proj_weight.copy_(torch.cat([src.q_proj.weight, src.k_proj.weight,
                                            src.v_proj.weight]))
        dst.in_proj_bias.copy_(torch.cat([src.q_proj.bias, src.k_proj.bias, src.v_proj.bias]))
        dst.out_proj.weight.copy_(src.out_proj.weight)
        dst.out_proj.bias.copy_(src.out_proj.bias)

    def copy(dst: torch.nn.Module, src: torch.nn.Module) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    with torch.no_grad():
        for r, o in zip(ref.encoder.layers, ours.encoder_layers, strict=True):
            attn(r.self_attn, o.self_attn)
            copy(r.norm1, o.self_attn_norm)
            copy(r.linear1, o.moe.experts[0].fc1)
            copy(r.linear2, o.moe.experts[0].fc2)
            copy(r.norm2, o.ffn_norm)
        for r, o in zip(ref.decoder.layers, ours.decoder_layers, strict=True):
            attn(r.self_attn, o.self_attn)
            copy(r.norm1, o.self_attn_norm)
            attn(r.multihead_attn, o.cross_attn)
            copy(r.norm2, o.cross_attn_norm)
            copy(r.linear1, o.moe.experts[0].fc1)
            copy(r.linear2, o.moe.experts[0].fc2)
            copy(r.norm3, o.ffn_norm)

    src, prev = batch(seed=9)
    emb = ours.embed[:, :d]

    def embed(tokens: torch.Tensor) -> torch.Tensor:
        return emb[tokens] * d**0.5 + sinusoid(tokens.shape[1], d)

    pad = src.eq(PAD_ID)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(prev.shape[1],
                                                                  dtype=torch.float64)
    hidden_states = ref(embed(src), embed(prev), tgt_mask=causal, src_key_padding_mask=pad,
                        memory_key_padding_mask=pad)
    expected = hidden_states @ emb.T  # [B, T, V]
    oracle = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours(src, prev)[0], expected, **oracle)
    torch.testing.assert_close(supernet(src, prev, dense)[0], expected, **oracle)
