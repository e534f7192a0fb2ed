"""The MoE FFN: index dispatch vs a naive per-expert loop, 1 expert vs a dense FFN, routing
statistics vs hand computation, fp32 routing, jitter, padding."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import supernet.functional as functional
from search_spaces import load_space
from supernet import core
from supernet.elastic import ElasticMoE
from supernet.functional import (
    ExpertWeights,
    MoEWeights,
    moe_ffn,
    reference_moe_ffn,
    route,
)
from supernet.transformer import MoE, Transformer


def make_moe(d: int, dims: tuple[int, ...], top_k: int, *, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> MoEWeights:
    """Random leaf tensors (requires_grad) for an MoE layer."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=dtype) * 0.5).requires_grad_()

    experts = tuple(ExpertWeights(t(h, d), t(h), t(d, h), t(d)) for h in dims)
    if len(dims) == 1:
        return MoEWeights(None, None, experts, top_k)
    return MoEWeights(t(len(dims), d), t(len(dims)), experts, top_k)


def leaves(w: MoEWeights) -> list[torch.Tensor]:
    out = [p for e in w.experts for p in e]
    return out + [p for p in (w.router_w, w.router_b) if p is not None]


def grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=out.dtype)
    return list(torch.autograd.grad(out, inputs, upstream, allow_unused=True))


@pytest.mark.parametrize("dims,top_k", [((8, 16), 1), ((8, 16, 4), 2), ((12, 12, 12, 12), 2),
                                        ((16, 4, 8, 12), 1), ((5, 9, 7), 3)])
def test_index_dispatch_equals_naive_loop(dims, top_k):
    d, n_tok = 6, 37
    w = make_moe(d, dims, top_k, seed=len(dims) * 10 + top_k)
    x = torch.randn(n_tok, d, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64).requires_grad_()
    fast, _ = moe_ffn(x, w)
    slow = reference_moe_ffn(x, w)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    inputs = [x, *leaves(w)]
    for gf, gs in zip(grads(fast, inputs), grads(slow, inputs), strict=True):
        torch.testing.assert_close(gf, gs, rtol=0, atol=1e-12)


def test_dispatch_with_an_expert_that_gets_no_token():
    d = 4
    w = make_moe(d, (8, 4, 6), 1, seed=5)
    with torch.no_grad():
        w.router_b.copy_(torch.tensor([50.0, -50.0, 0.0], dtype=torch.float64))  # expert 1 idle
    x = torch.randn(20, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, stats = moe_ffn(x, w)
    assert stats.counts[1] == 0
    torch.testing.assert_close(out, reference_moe_ffn(x, w), rtol=0, atol=1e-12)
    g = torch.autograd.grad(out.sum(), list(w.experts[1]), allow_unused=True)
    assert all(t is None or not t.any() for t in g)


def test_one_expert_is_a_dense_ffn_in_outputs_and_gradients():
    d, h = 8, 24
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d)).double()
    w = MoEWeights(None, None, (ExpertWeights(dense[0].weight, dense[0].bias, dense[2].weight,
                                              dense[2].bias),), 1)
    x = torch.randn(13, d, dtype=torch.float64, requires_grad=True)
    out, stats = moe_ffn(x, w)
    ref = dense(x)
    assert torch.equal(out, ref)
    assert stats.load_balance is None and stats.z_loss is None and stats.counts.tolist() == [13]
    params = [x, *dense.parameters()]
    for a, b in zip(grads(out, params), grads(ref, params), strict=True):
        assert torch.equal(a, b)


def test_one_expert_layers_have_no_router():
    elastic = ElasticMoE(d=8, hidden=16, experts=3)
    assert elastic.weights(8, (16,), 1).router_w is None
    assert ElasticMoE(d=8, hidden=16, experts=1).router_w is None
    assert MoE(8, (16,), 1).router is None and MoE(8, (16, 8), 1).router is not None


def test_routing_statistics_match_hand_computation():
    d, dims, k = 5, (6, 3, 9, 4), 2
    w = make_moe(d, dims, k, seed=9, dtype=torch.float32)
    x = torch.randn(30, d, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(30, dtype=torch.bool)
    mask[25:] = False  # padding
    gates, experts, stats = route(x, w, token_mask=mask, jitter=0.0, training=False,
                                  normalize_gates=False)
    with torch.no_grad():
        logits = x @ w.router_w.T + w.router_b
        probs = torch.softmax(logits, dim=-1)
    top = probs.topk(k, dim=-1)
    torch.testing.assert_close(gates, top.values)
    real = list(range(25))
    n = len(dims)
    counts = [sum(int(e in experts[t].tolist()) for t in real) for e in range(n)]
    assert stats.counts.tolist() == counts
    frac = [c / (25 * k) for c in counts]
    mean_p = [float(probs[real, e].mean()) for e in range(n)]
    lb = n * sum(f * p for f, p in zip(frac, mean_p, strict=True))
    z = float((torch.logsumexp(logits[real], dim=-1) ** 2).mean())
    assert math.isclose(float(stats.load_balance.detach()), lb, rel_tol=1e-5)
    assert math.isclose(float(stats.z_loss.detach()), z, rel_tol=1e-5)


def test_padding_tokens_do_not_change_statistics():
    w = make_moe(4, (6, 3, 5), 2, seed=4, dtype=torch.float32)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    junk = torch.randn(6, 4, generator=torch.Generator().manual_seed(7)) * 10
    mask = torch.tensor([True] * 10 + [False] * 6)
    _, base = moe_ffn(x, w)
    out, padded = moe_ffn(torch.cat([x, junk]), w, token_mask=mask)
    assert torch.equal(base.counts, padded.counts)
    torch.testing.assert_close(base.load_balance, padded.load_balance)
    torch.testing.assert_close(base.z_loss, padded.z_loss)
    torch.testing.assert_close(out[:10], moe_ffn(x, w)[0])


def test_uniform_router_gives_unit_load_balance():
    w = make_moe(4, (6, 3, 5), 2, seed=4, dtype=torch.float32)
    with torch.no_grad():
        w.router_w.zero_()
        w.router_b.zero_()
    with torch.no_grad():
        _, stats = moe_ffn(torch.randn(11, 4), w)
    assert math.isclose(float(stats.load_balance), 1.0, rel_tol=1e-6)
    assert math.isclose(float(stats.z_loss), math.log(3) ** 2, rel_tol=1e-6)


def test_normalized_gates_sum_to_one():
    w = make_moe(4, (6, 3, 5), 2, seed=3, dtype=torch.float32)
    gates, _, _ = route(torch.randn(9, 4), w, token_mask=None, jitter=0.0, training=False,
                        normalize_gates=True)
    torch.testing.assert_close(gates.sum(-1), torch.ones(9))


def test_jitter_only_in_training():
    w = make_moe(4, (6, 3, 5), 1, seed=3, dtype=torch.float32)
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    plain, s0 = moe_ffn(x, w)
    evald, s1 = moe_ffn(x, w, jitter=0.5, training=False)
    assert torch.equal(plain, evald) and torch.equal(s0.z_loss, s1.z_loss)
    torch.manual_seed(0)
    _, s2 = moe_ffn(x, w, jitter=0.5, training=True)
    assert not torch.equal(s0.z_loss, s2.z_loss)


def test_router_runs_in_fp32_under_autocast():
    w = make_moe(8, (16, 8), 1, seed=1, dtype=torch.float32)
    x = torch.randn(12, 8)
    ref_gates, ref_experts, _ = route(x, w, token_mask=None, jitter=0.0, training=False,
                                      normalize_gates=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gates, experts, stats = route(x.bfloat16(), w, token_mask=None, jitter=0.0,
                                      training=False, normalize_gates=False)
        out, _ = moe_ffn(x, w)
    assert gates.dtype == torch.float32 and stats.load_balance.dtype == torch.float32
    # the only difference is the bf16 rounding of the input, not of the router math
    exact = torch.softmax(x.bfloat16().float() @ w.router_w.T + w.router_b, -1).topk(1)
    torch.testing.assert_close(gates, exact.values)
    assert torch.equal(experts, exact.indices)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert ref_gates.dtype == torch.float32 and ref_experts.shape == (12, 1)


def zeros_for_none(gs: list[torch.Tensor | None], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Unused experts get no gradient in the index path and zeros in the gather one."""
    return [torch.zeros_like(t) if g is None else g for g, t in zip(gs, like, strict=True)]


@pytest.mark.parametrize("dims,top_k", [((8, 16), 1), ((8, 16, 4), 2), ((12, 12, 12, 12), 2),
                                        ((16, 4, 8, 12), 1), ((5, 9, 7), 3)])
@pytest.mark.parametrize("n_tok", [1, 5, 37])
def test_gather_dispatch_equals_index_dispatch_and_naive_loop(dims, top_k, n_tok):
    d = 6
    w = make_moe(d, dims, top_k, seed=len(dims) * 10 + top_k, dtype=torch.float32)
    x = torch.randn(n_tok, d, generator=torch.Generator().manual_seed(3)).requires_grad_()
    mask = torch.arange(n_tok) < max(1, n_tok - 2)  # the last tokens are padding
    gather, g_stats = moe_ffn(x, w, token_mask=mask, dispatch="gather")
    index, i_stats = moe_ffn(x, w, token_mask=mask, dispatch="index")
    torch.testing.assert_close(gather, index, rtol=0, atol=1e-5)
    torch.testing.assert_close(gather, reference_moe_ffn(x, w), rtol=0, atol=1e-5)
    assert torch.equal(g_stats.counts, i_stats.counts)
    torch.testing.assert_close(g_stats.load_balance, i_stats.load_balance, rtol=0, atol=0)
    inputs = [x, *leaves(w)]
    gs = zeros_for_none(grads(gather, inputs), inputs)
    gi = zeros_for_none(grads(index, inputs), inputs)
    for a, b in zip(gs, gi, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_auto_dispatch_switches_on_the_token_count(monkeypatch):
    calls: list[str] = []
    for name in ("gather_dispatch", "index_dispatch"):
        real = getattr(functional, name)
        monkeypatch.setattr(functional, name,
                            lambda *a, _n=name, _f=real, **kw: calls.append(_n) or _f(*a, **kw))
    w = make_moe(4, (6, 3, 5), 2, seed=2, dtype=torch.float32)
    limit = 8
    monkeypatch.setattr(functional, "GATHER_DISPATCH_MAX_TOKENS", limit)
    for n in (1, limit, limit + 1):
        moe_ffn(torch.randn(n, 4), w)
    assert calls == ["gather_dispatch", "gather_dispatch", "index_dispatch"]
    with pytest.raises(ValueError, match="dispatch"):
        moe_ffn(torch.randn(3, 4), w, dispatch="fast")


def test_model_with_gather_dispatch_equals_index_dispatch():
    space = load_space("tiny")
    rng = random.Random(4)
    configs = [c for c in (space.sample(rng) for _ in range(30)) if not c.is_dense][:3]
    assert configs
    src = torch.randint(4, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    prev = torch.randint(4, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    src[2, 4:] = 0
    prev[1, 3:] = 0
    for config in configs:
        model = Transformer(config, 50, seed=1).eval()
        out = {}
        for dispatch in ("index", "gather"):
            weights = model.weights()
            enc = core.encode(src, weights, model._run(0)._replace(dispatch=dispatch))
            out[dispatch] = core.decode(prev, enc, weights,
                                        model._run(1)._replace(dispatch=dispatch))[0]
        torch.testing.assert_close(out["gather"], out["index"], rtol=0, atol=1e-5)


def test_random_routing_spreads_tokens_evenly_and_leaves_the_router_untrained():
    """The router warm-up: each token to k distinct uniformly random experts with gates
    1/k; the router gets no gradient; off, routing is the router's own."""
    w = make_moe(8, (16, 8, 4, 12), 2, seed=3)
    x = torch.randn(6000, 8, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    gates, experts, stats = functional.route(x, w, token_mask=None, jitter=0.0, training=True,
                                             normalize_gates=False, random_routing=True)
    assert (experts[:, 0] != experts[:, 1]).all()
    assert torch.equal(gates, torch.full_like(gates, 0.5))
    share = stats.counts.double() / stats.counts.sum()
    assert (share - 0.25).abs().max() < 0.02  # 12,000 slots over 4 experts
    y, _ = functional.moe_ffn(x, w, training=True, random_routing=True)
    y.sum().backward()
    assert w.router_w.grad is None and w.router_b.grad is None
    assert x.grad is not None and all(e.w1.grad is not None for e in w.experts)
    routed = functional.route(x, w, token_mask=None, jitter=0.0, training=True,
                              normalize_gates=False)[1]
    want = torch.softmax((x @ w.router_w.T + w.router_b).float(), dim=-1).topk(2).indices
    assert torch.equal(routed, want)


def test_the_supernet_routes_randomly_only_when_training_with_the_flag():
    from supernet import SuperTransformer

    space = load_space("tiny")
    model = SuperTransformer(space, 40)
    config = space.largest()
    model.random_routing = True
    assert model.train().run_settings(config, 0).random_routing
    assert not model.eval().run_settings(config, 0).random_routing
    model.random_routing = False
    assert not model.train().run_settings(config, 1).random_routing
