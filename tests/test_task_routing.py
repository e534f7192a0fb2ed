"""Routing granularity (Kudugunta et al. 2021): token, sentence and task routing.

Oracles: the routing of one row per sentence computed alone (`route` on the rows), the
token-only supernet of the same weights (a token-routed subnet must not notice the other
routers), the static `Transformer` extracted from the supernet, and a hash of the
token-only supernet's initial weights recorded before routing existed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
import torch

from search_spaces import SearchSpace, load_space
from supernet import SuperTransformer
from supernet.functional import ExpertWeights, MoEWeights, route
from supernet.tokens import EOS_ID, PAD_ID

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

VOCAB = 40
TAGS = (5, 6, 7)  # stand-ins for the <2xx> tags at the start of every source


def routed_space(encoder=("sentence", "task", "token"),
                 decoder=("sentence", "task", "token")) -> SearchSpace:
    data = load_space("tiny").to_dict()
    data["choices"].update(encoder_routing=list(encoder), decoder_routing=list(decoder),
                           encoder_experts=[2, 3], decoder_experts=[2, 3])
    return SearchSpace.from_dict(data, source="<routed>")


def batch(tags: list[int], *, seed: int = 0, src_len: int = 7, tgt_len: int = 6):
    """Sources [B, S] starting with their tag and ending in EOS (row 1 padded), prev [B, T]."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(8, VOCAB, (len(tags), src_len), generator=g)
    src[:, 0] = torch.tensor(tags)
    src[:, -1] = EOS_ID
    if len(tags) > 1:
        src[1, -2:] = PAD_ID
        src[1, -3] = EOS_ID
    prev = torch.randint(8, VOCAB, (len(tags), tgt_len), generator=g)
    return src, prev


def subnet(space: SearchSpace, seed: int, **routing: str):
    config = space.sample(random.Random(seed))
    return dataclasses.replace(config, **routing)


def test_route_by_rows_gives_each_sentence_its_rows_decision():
    g = torch.Generator().manual_seed(0)
    experts = tuple(ExpertWeights(torch.randn(8, 4, generator=g), torch.zeros(8),
                                  torch.randn(4, 8, generator=g), torch.zeros(4))
                    for _ in range(3))
    w = MoEWeights(torch.randn(3, 6, generator=g), torch.randn(3, generator=g), experts, 2,
                   "task")
    x, rows = torch.randn(4 * 5, 4, generator=g), torch.randn(4, 6, generator=g)
    gates, chosen, stats = route(x, w, token_mask=None, jitter=0.0, training=False,
                                 normalize_gates=False, rows=rows)
    alone = torch.softmax(rows @ w.router_w.T + w.router_b, dim=-1).topk(2, dim=-1)
    for b in range(4):  # every token of sentence b: sentence b's experts and gates
        assert torch.equal(chosen[5 * b:5 * b + 5], alone.indices[b].expand(5, 2))
        torch.testing.assert_close(gates[5 * b:5 * b + 5], alone.values[b].expand(5, 2))
    assert int(stats.counts.sum()) == 4 * 5 * 2


@pytest.mark.parametrize("side", ["encoder", "decoder"])
@pytest.mark.parametrize("routing", ["task", "sentence"])
def test_every_token_of_a_task_or_sentence_goes_to_the_same_experts(side, routing):
    space = routed_space()
    model = SuperTransformer(space, VOCAB, seed=1).eval()
    config = dataclasses.replace(space.largest(), **{f"{side}_top_k": (1,) * getattr(
        space.largest(), f"{side}_layers"), f"{side}_routing": routing})
    # sentences of one task (task routing), or one sentence repeated (sentence routing)
    src, prev = batch([TAGS[1]] * 3)
    if routing == "sentence":
        src, prev = src[:1].expand(3, -1), prev[:1].expand(3, -1)
    with torch.no_grad():
        _, aux = model(src, prev, config)
    counts = aux.encoder_counts if side == "encoder" else aux.decoder_counts
    for layer in counts:  # top-1: one expert received every token of the layer
        assert int((layer > 0).sum()) == 1, layer
    other = aux.decoder_counts if side == "encoder" else aux.encoder_counts
    assert any(int((layer > 0).sum()) > 1 for layer in other)  # token routing still spreads


def test_tasks_route_independently_of_each_other():
    space = routed_space()
    model = SuperTransformer(space, VOCAB, seed=2).eval()
    config = subnet(space, 4, encoder_routing="task", decoder_routing="task")
    src, prev = batch(list(TAGS))
    with torch.no_grad():
        together, _ = model(src, prev, config)
        alone = torch.cat([model(src[i:i + 1, :], prev[i:i + 1], config)[0] for i in (0, 2)])
    torch.testing.assert_close(together[[0, 2]], alone, rtol=1e-5, atol=1e-5)


def test_token_only_supernet_is_unchanged():
    model = SuperTransformer(load_space("tiny"), 50, seed=3)
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    # recorded before routing granularity existed: the same tensors, names and draws
    assert h.hexdigest() == "e32b94ffd9126e019262c266dba5e81c30903eae90df1773a84d31a54c7dbcac"


def test_token_routed_subnet_ignores_the_other_routers_bitwise():
    space = routed_space()
    routed = SuperTransformer(space, VOCAB, seed=5).eval()
    plain_space = routed_space(encoder=("token",), decoder=("token",))
    plain = SuperTransformer(plain_space, VOCAB, seed=0).eval()
    missing, unexpected = plain.load_state_dict(routed.state_dict(), strict=False)
    assert not missing and unexpected and all("task_router" in k or "sentence_router" in k
                                              for k in unexpected)
    src, prev = batch(list(TAGS))
    for seed in range(4):
        config = subnet(plain_space, seed)
        assert config.encoder_routing == config.decoder_routing == "token"
        with torch.no_grad():
            a, aux_a = routed(src, prev, config)
            b, aux_b = plain(src, prev, config)
        assert torch.equal(a, b) and torch.equal(aux_a.load_balance, aux_b.load_balance)


@pytest.mark.parametrize("routing", [("task", "task"), ("sentence", "token"),
                                     ("token", "task"), ("sentence", "sentence")])
def test_extracted_model_equals_the_supernet(routing):
    space = routed_space()
    model = SuperTransformer(space, VOCAB, seed=6).eval()
    config = subnet(space, 11, encoder_routing=routing[0], decoder_routing=routing[1])
    static = model.extract(config).eval()
    src, prev = batch(list(TAGS), seed=3)
    with torch.no_grad():
        want, aux = model(src, prev, config)
        got, aux_static = static(src, prev)
        enc = static.encode(src)  # incremental decoding reads the tags from the encoder
        cache = static.new_cache()
        steps = [static.decode(prev[:, t:t + 1], enc, cache)[0] for t in range(prev.shape[1])]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), want, rtol=1e-4, atol=1e-4)
    assert aux.routing_counts() == aux_static.routing_counts()


def test_a_routing_the_supernet_did_not_learn_is_refused():
    space = routed_space(decoder=("token",))
    model = SuperTransformer(space, VOCAB)
    config = dataclasses.replace(space.largest(), decoder_routing="task")
    with pytest.raises(ValueError, match="decoder_routing' = 'task' is not one the supernet"):
        model.bind(config)
    with pytest.raises(ValueError, match="decoder_routing' = 'task' is not in space"):
        space.validate(config)


# ---- per-task extraction ---------------------------------------------------------------
def task_subnet(space: SearchSpace, top_k: int, *, encoder="task", decoder="task"):
    """Heterogeneous experts on both sides, every layer routed with ``top_k``."""
    base = space.largest()
    return dataclasses.replace(
        base, encoder_expert_dims=((64, 32, 48),) * base.encoder_layers,
        encoder_top_k=(top_k,) * base.encoder_layers,
        decoder_expert_dims=((32, 64, 32),) * base.decoder_layers,
        decoder_top_k=(top_k,) * base.decoder_layers,
        encoder_routing=encoder, decoder_routing=decoder)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("sides", [("task", "task"), ("token", "task"), ("task", "sentence")])
def test_per_task_extraction_equals_the_supernet_on_that_task(top_k, sides):
    from supernet.task_extract import for_task, served_config, task_choice

    data = routed_space().to_dict()
    data["choices"].update(encoder_ffn_dim=[32, 48, 64], decoder_ffn_dim=[32, 64])
    space = SearchSpace.from_dict(data, source="<hetero>")
    model = SuperTransformer(space, VOCAB, seed=7).eval()
    with torch.no_grad():  # routers far from uniform, so the tasks choose differently
        for name, p in model.named_parameters():
            if "router" in name:
                p.mul_(5.0)
    config = task_subnet(space, top_k, encoder=sides[0], decoder=sides[1])
    static = model.extract(config).eval()
    for tag in TAGS:
        small = for_task(static, tag)
        assert served_config(model, config, tag) == small.config  # costs without copying
        src, prev = batch([tag] * 3, seed=tag)
        with torch.no_grad():
            want, _ = model(src, prev, config)
            got, aux = small(src, prev)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for side, routing in zip(("encoder", "decoder"), sides, strict=True):
            dims = getattr(small.config, f"{side}_expert_dims")
            if routing == "task":  # one FFN of the chosen experts' summed width
                experts, _ = task_choice(static, side, 0, tag)
                assert len(experts) == top_k
                assert dims[0] == (sum(getattr(config, f"{side}_expert_dims")[0][e]
                                       for e in experts),)
                assert getattr(small.config, f"{side}_routing") == "token"
            else:
                assert dims == getattr(config, f"{side}_expert_dims")
        assert small.count_params().total < static.count_params().total
    for side, routing in zip(("encoder", "decoder"), sides, strict=True):
        if routing == "task":  # different tags choose different experts (the test can fail)
            assert len({task_choice(static, side, 0, t) for t in range(8, VOCAB)}) > 1


def test_per_task_extraction_of_a_quantized_top1_layer_and_refusals():
    from supernet.task_extract import for_task

    data = routed_space().to_dict()
    data["choices"]["expert_bits"] = [8, 32]
    space = SearchSpace.from_dict(data, source="<bits>")
    model = SuperTransformer(space, VOCAB, seed=8).eval()
    layers = space.largest().decoder_layers
    config = dataclasses.replace(task_subnet(space, 1, encoder="token"),
                                 decoder_expert_dims=((64, 32),) * layers,
                                 decoder_expert_bits=((8, 8),) * layers)
    static = model.extract(config).eval()
    small = for_task(static, TAGS[0])
    src, prev = batch([TAGS[0]] * 2)
    with torch.no_grad():
        torch.testing.assert_close(small(src, prev)[0], model(src, prev, config)[0],
                                   rtol=1e-5, atol=1e-5)
    assert small.config.decoder_expert_bits[0] == (8,)
    two = dataclasses.replace(config, decoder_top_k=(2,) * len(config.decoder_top_k))
    with pytest.raises(ValueError, match="decoder layer 0: the task uses 2 quantized experts"):
        for_task(model.extract(two), TAGS[0], name="fr")
    plain = dataclasses.replace(config, decoder_routing="token")
    with pytest.raises(ValueError, match="fr: the model has no task-routed layer"):
        for_task(model.extract(plain), TAGS[0], name="fr")


# ---- costs of routed layers --------------------------------------------------------------
@pytest.mark.parametrize("routing", [("task", "sentence"), ("sentence", "task")])
def test_costs_of_routed_layers_match_the_model(routing):
    from automoe.costs.flops import FlopsProtocol, RoutingCounts, flops
    from automoe.costs.measured_flops import count_flops_fvcore, protocol_inputs
    from supernet.params import count_params

    space = routed_space()
    model = SuperTransformer(space, VOCAB, seed=9).eval()
    config = dataclasses.replace(space.largest(), encoder_embed_dim=24,
                                 encoder_routing=routing[0], decoder_routing=routing[1])
    static = model.extract(config)
    counts = count_params(config, VOCAB)
    assert counts.total == sum(p.numel() for p in static.parameters())
    token = dataclasses.replace(config, encoder_routing="token", decoder_routing="token")
    # a sentence-routed decoder router reads the encoder's width (24), not its own (32)
    widths = {"token": 0, "task": 0, "sentence": 24 - 32}
    assert counts.total - count_params(token, VOCAB).total == sum(
        widths[routing[1]] * n for n in config.decoder_experts)
    protocol = FlopsProtocol(src_len=7, tgt_len=5)
    src, prev = protocol_inputs(protocol, VOCAB, seed=0)
    with torch.no_grad():
        _, aux = static(src, prev)
    observed = flops(config, protocol, routing=RoutingCounts(*aux.routing_counts()))
    measured = count_flops_fvcore(static, protocol, vocab_size=VOCAB, seed=0)
    assert measured.macs == pytest.approx(observed.macs, rel=1e-12)
    # the router runs once per sentence instead of once per token
    saved = flops(token, protocol, routing=RoutingCounts(*aux.routing_counts())).macs - observed.macs
    enc_n, dec_n = sum(config.encoder_experts), sum(config.decoder_experts)
    assert saved == (7 - 1) * 24 * enc_n + 5 * 32 * dec_n - config.route_dim("decoder") * dec_n


@pytest.mark.parametrize("what", ["extracted", "task-routed encoder"])
def test_onnx_export_of_a_task_model_matches_torch(tmp_path, what):
    pytest.importorskip("onnxruntime")
    from automoe.onnx_export import export_onnx
    from automoe.onnx_runtime import OrtTransformer
    from supernet.task_extract import for_task

    space = routed_space()
    model = SuperTransformer(space, VOCAB, seed=10).eval()
    config = task_subnet(space, 2, encoder="task", decoder="task")
    static = model.extract(config).eval()
    with pytest.raises(ValueError, match="task-routed decoder is not supported"):
        export_onnx(static, tmp_path / "routed")
    if what == "extracted":
        small = for_task(static, TAGS[1])
    else:  # the encoder graph routes by the tag it reads itself
        small = model.extract(dataclasses.replace(config, decoder_routing="token")).eval()
    export_onnx(small, tmp_path / "fr")
    ort = OrtTransformer(tmp_path / "fr")
    src, prev = batch([TAGS[1]] * 2 if what == "extracted" else list(TAGS), seed=4)
    with torch.no_grad():
        enc = small.encode(src)
        cache = small.new_cache()
        want = torch.cat([small.decode(prev[:, t:t + 1], enc, cache)[0]
                          for t in range(prev.shape[1])], dim=1)
    enc_ort = ort.encode(src)
    cache_ort = ort.new_cache()
    got = torch.cat([torch.as_tensor(ort.decode(prev[:, t:t + 1], enc_ort, cache_ort)[0])
                     for t in range(prev.shape[1])], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_routing_features_exist_only_where_a_side_has_a_choice():
    space = routed_space(decoder=("token",))
    names = space.feature_names()
    assert names[-2:] == ["encoder_routing_sentence", "encoder_routing_task"]
    assert not any(n.startswith("decoder_routing") for n in names)
    config = subnet(space, 1, encoder_routing="task")
    assert space.features(config)[-2:] == [0.0, 1.0]
    assert len(space.features(config)) == len(names)
    assert not any("routing" in n for n in load_space("tiny").feature_names())
