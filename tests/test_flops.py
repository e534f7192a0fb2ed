"""Analytic FLOPs against hand-derived counts (the model-based cross-checks are in
test_flops_measured.py)."""

from __future__ import annotations

import pytest

from automoe.costs.flops import FlopsProtocol, RoutingCounts, expert_macs_per_token, flops
from search_spaces.config import SubnetConfig


def _config(**over) -> SubnetConfig:
    base = dict(
        encoder_embed_dim=4, decoder_embed_dim=6, qkv_dim=8,
        encoder_expert_dims=((10,),), encoder_heads=(2,), encoder_top_k=(1,),
        decoder_expert_dims=((12, 20),), decoder_heads=(4,), decoder_cross_heads=(1,),
        decoder_ende_attn=(1,), decoder_top_k=(1,),
    )
    base.update(over)
    return SubnetConfig(**base)


P = FlopsProtocol(src_len=2, tgt_len=3)


def test_hand_derived_count():
    # encoder (S=2, d=4, q=8): Q,O 2*4*8*2 + K,V 2*4*8*2 + scores/values 2*2*2*8 = 320;
    #   FFN 2 tokens * 2*4*10 = 160; one expert: no router
    # decoder (T=3, d=6): self 3*6*8*2 + 3*6*8*2 + 2*3*3*8 = 720;
    #   cross Q,O 3*6*8*2 = 288, K,V over 2 encoder positions of width 4: 2*4*8*2 = 128,
    #   scores/values 2*3*2*8 = 96 -> 512;
    #   FFN uniform top-1 of (12, 20): 3 * (144 + 240) / 2 = 576; router 3*6*2 = 36
    r = flops(_config(), P)
    assert r.breakdown == {
        "encoder_self_attention": 320, "encoder_ffn": 160, "encoder_router": 0,
        "decoder_self_attention": 720, "decoder_cross_attention": 512, "decoder_ffn": 576,
        "decoder_router": 36, "output_projection": 0,
    }
    assert r.macs == 2324 and r.flops == 4648
    assert (r.macs_min, r.macs_max) == (2324 - 576 + 3 * 144, 2324 - 576 + 3 * 240)
    # observed: two tokens to the small expert, one to the large one
    obs = flops(_config(), P, routing=RoutingCounts(encoder=((2,),), decoder=((2, 1),)))
    assert obs.macs == 2324 - 576 + 2 * 144 + 240 and obs.routing == "observed"


def test_heads_do_not_change_flops_and_batch_scales():
    a = flops(_config(), P)
    b = flops(_config(encoder_heads=(8,), decoder_heads=(1,), decoder_cross_heads=(8,)), P)
    assert a.macs == b.macs
    assert flops(_config(), FlopsProtocol(src_len=2, tgt_len=3, batch=5)).macs == 5 * a.macs


def test_output_projection_and_protocol_checks():
    r = flops(_config(), FlopsProtocol(src_len=2, tgt_len=3, include_output_projection=True, vocab_size=100))
    assert r.breakdown["output_projection"] == 3 * 6 * 100
    assert r.macs == 2324 + 1800
    with pytest.raises(ValueError, match="vocab_size"):
        FlopsProtocol(include_output_projection=True)
    with pytest.raises(ValueError, match="'src_len'"):
        FlopsProtocol(src_len=0)
    assert "30 source + 30 teacher-forced" in FlopsProtocol().describe()


def test_arbitrary_cross_attention_lengthens_keys_and_is_clipped():
    two_enc = dict(encoder_expert_dims=((10,), (10,)), encoder_heads=(2, 2), encoder_top_k=(1, 1))
    base = flops(_config(**two_enc), P).breakdown["decoder_cross_attention"]
    wide = flops(_config(**two_enc, decoder_ende_attn=(2,)), P).breakdown["decoder_cross_attention"]
    # K,V now over 4 positions (+128) and scores/values 2*3*4*8 (+96)
    assert wide - base == 128 + 96
    clipped = flops(_config(**two_enc, decoder_ende_attn=(3,)), P).breakdown["decoder_cross_attention"]
    assert clipped == wide  # only two encoder layers exist


def test_topk_and_expert_expectation():
    # top-2 of 4 experts: every expert is chosen with probability 1/2
    exp, lo, hi = expert_macs_per_token([1, 2, 3, 4], 2, width=10)
    assert exp == pytest.approx(2 * 20 * (1 + 2 + 3 + 4) / 4)
    assert (lo, hi) == (20 * 3, 20 * 7)
    exp_obs, _, _ = expert_macs_per_token([1, 2, 3, 4], 2, width=10, shares=[0.5, 0.5, 0, 0])
    assert exp_obs == pytest.approx(2 * (0.5 * 20 + 0.5 * 40))
    # homogeneous experts: routing does not matter
    homo = _config(decoder_expert_dims=((16, 16, 16),), decoder_top_k=(2,))
    u = flops(homo, P)
    o = flops(homo, P, routing=RoutingCounts(encoder=((2,),), decoder=((6, 0, 0),)))
    assert u.macs == o.macs == u.macs_min == u.macs_max
    assert u.breakdown["decoder_ffn"] == 3 * 2 * (2 * 6 * 16)


def test_routing_counts_are_checked():
    with pytest.raises(ValueError, match=r"decoder\[0\]"):
        flops(_config(), P, routing=RoutingCounts(encoder=((2,),), decoder=((2, 1, 0),)))
    with pytest.raises(ValueError, match="layers"):
        flops(_config(), P, routing=RoutingCounts(encoder=(), decoder=((2, 1),)))
