"""ONNX export: ONNX Runtime runs the exported encoder and decoder-step graphs to the torch
model's logits (teacher forcing through the cache, and greedy incremental decoding on each
runtime's own choices), and bad graph files fail with their name."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces import load_space
from search_spaces.config import SubnetConfig
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID
from supernet.transformer import Transformer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import onnx  # noqa: E402

from automoe.onnx_export import check_onnx_dir, export_onnx, read_onnx_meta  # noqa: E402

pytestmark = pytest.mark.slow  # each export traces the model twice (tens of seconds)

VOCAB = 40


def pick_subnet(space: str, kind: str, *, seed: int, tries: int,
                reads_layers: int | None = None) -> SubnetConfig:
    """The first seeded sample of ``space`` of that kind: "dense" has one expert per layer;
    "moe" has heterogeneous experts, both top-1 and top-2 layers and, with
    ``reads_layers``, a decoder layer attending to that many encoder layers."""
    choices, rng = load_space(space), random.Random(seed)
    for _ in range(tries):
        c = choices.sample(rng)
        if kind == "dense" and c.is_dense:
            return c
        ks = set(c.encoder_top_k + c.decoder_top_k)
        hetero = any(len(set(d)) > 1 for d in c.encoder_expert_dims + c.decoder_expert_dims)
        if (kind == "moe" and {1, 2} <= ks and hetero
                and (reads_layers is None or reads_layers in c.decoder_ende_attn)):
            return c
    raise AssertionError(f"no {kind} subnet of {space} in {tries} samples")


def pick(kind: str) -> SubnetConfig:
    return pick_subnet("tiny", kind, seed=0, tries=500)


@contextlib.contextmanager
def _everything_said() -> Iterator[dict[str, list[str]]]:
    """The warnings raised and the text written meanwhile, by Python or by C++ straight to
    file descriptors 1 and 2 (what a user's terminal would show)."""
    said: dict[str, list[str]] = {"warnings": [], "output": []}
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        warnings.simplefilter("always")
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd), os.close(copy)
            sink.seek(0)
            said["output"] += [text for text in (sink.read().decode(), out.getvalue(),
                                                 err.getvalue()) if text]
            said["warnings"] += [str(w.message) for w in caught]


class _Exports:
    """Each kind's model exported once per module (an export traces the model twice), with
    what the export said."""

    def __init__(self, root: Path) -> None:
        self.root, self.done = root, {}

    def __call__(self, kind: str) -> tuple[Transformer, Path, dict[str, list[str]]]:
        if kind not in self.done:
            model = Transformer(pick(kind), VOCAB, seed=3).eval()
            with _everything_said() as said:
                out = export_onnx(model, self.root / kind / "onnx")
            self.done[kind] = model, out, said
        return self.done[kind]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> _Exports:
    return _Exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module", params=["moe", "dense"])
def exported(request, exports) -> tuple[Transformer, Path]:
    model, out, _ = exports(request.param)
    return model, out


class OrtModel:
    """The two graphs in ONNX Runtime (CPU)."""

    def __init__(self, directory: Path) -> None:
        self.meta = read_onnx_meta(directory)
        opts = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(directory / "encoder.onnx"), providers=opts)
        self.step = ort.InferenceSession(str(directory / "decoder_step.onnx"), providers=opts)

    def encode(self, src: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """-> (padding_mask, [cross_key_0, cross_value_0, ...])."""
        mask, *cross = self.encoder.run(None, {"src_tokens": src})
        return mask, cross

    def empty_cache(self, b: int) -> list[np.ndarray]:
        return [np.zeros((b, c["heads"], 0, c["head_dim"]), np.float32)
                for c in self.meta["cache"] for _ in range(2)]

    def decode_step(self, tokens: np.ndarray, mask: np.ndarray, cross: list[np.ndarray],
                    cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        names = self.meta["decoder_step"]["inputs"]
        feeds = dict(zip(names, [tokens, mask, *cross, *cache], strict=True))
        logits, *present = self.step.run(None, feeds)
        return logits, present


def batch(seed: int, b: int = 3, s: int = 7, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(EOS_ID + 1, VOCAB, (b, s), generator=g)
    src[:, -1] = EOS_ID
    src[1, 4:] = PAD_ID  # a shorter sentence
    src[1, 3] = EOS_ID
    prev = torch.randint(EOS_ID + 1, VOCAB, (b, t), generator=g)
    prev[:, 0] = BOS_ID
    return src, prev


def test_teacher_forcing_through_the_cache_equals_torch(exported):
    model, directory = exported
    runtime = OrtModel(directory)
    src, prev = batch(0)
    with torch.no_grad():
        enc = model.encode(src)
        want, _ = model.decode(prev, enc)  # [B, T, V], no cache
        torch_cache = model.new_cache()
        model.decode(prev[:, :1], enc, cache=torch_cache)  # fills the cross-attention cache
    mask, cross = runtime.encode(src.numpy())
    assert np.array_equal(mask, enc.padding_mask.numpy())
    want_cross = [t for i in range(len(torch_cache.cross_kv)) for t in torch_cache.cross_kv[i]]
    assert len(cross) == len(want_cross) == 2 * len(model.config.decoder_heads)
    for got_kv, want_kv in zip(cross, want_cross, strict=True):
        torch.testing.assert_close(torch.from_numpy(got_kv), want_kv, rtol=0, atol=1e-4)
    cache, got = runtime.empty_cache(src.shape[0]), []
    for t in range(prev.shape[1]):
        logits, cache = runtime.decode_step(prev[:, t:t + 1].numpy(), mask, cross, cache)
        got.append(logits)
    assert cache[0].shape[2] == prev.shape[1]
    torch.testing.assert_close(torch.from_numpy(np.concatenate(got, axis=1)), want, rtol=0,
                               atol=1e-4)


def test_greedy_incremental_decoding_equals_torch(exported):
    model, directory = exported
    runtime = OrtModel(directory)
    src, _ = batch(1, b=4, s=9)
    b = src.shape[0]
    with torch.no_grad():
        enc = model.encode(src)
        cache = model.new_cache()
        mask, cross = runtime.encode(src.numpy())
        ort_cache = runtime.empty_cache(b)
        mine = theirs = torch.full((b, 1), BOS_ID)
        for _ in range(8):
            want, _ = model.decode(mine[:, -1:], enc, cache=cache)
            got, ort_cache = runtime.decode_step(theirs[:, -1:].numpy(), mask, cross,
                                                 ort_cache)
            got = torch.from_numpy(got)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
            mine = torch.cat([mine, want[:, -1].argmax(-1, keepdim=True)], dim=1)
            theirs = torch.cat([theirs, got[:, -1].argmax(-1, keepdim=True)], dim=1)
            assert torch.equal(mine, theirs)


def test_onnx_json_describes_the_graphs(exported):
    model, directory = exported
    meta = check_onnx_dir(directory)
    assert meta["architecture_key"] == model.config.key()
    assert meta["vocab_size"] == VOCAB
    assert [c["heads"] for c in meta["cache"]] == list(model.config.decoder_heads)
    spans = [min(a, 3, len(model.config.encoder_heads)) for a in model.config.decoder_ende_attn]
    assert [c["span"] for c in meta["cache"]] == spans
    assert [c["cross_heads"] for c in meta["cache"]] == list(model.config.decoder_cross_heads)
    assert meta["moe_dispatch"] == "gather"
    assert meta["max_positions"] == model.options.max_positions


def _tampered(meta: dict, path: str, value) -> dict:
    """A deep copy of `meta` with the dotted `path` set to `value` (or removed: ...)."""
    import copy

    out = copy.deepcopy(meta)
    *head, last = path.split(".")
    node = out
    for part in head:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return out


@pytest.mark.parametrize("path, value, needle", [
    ("architecture_key", ..., "'architecture_key' must be 16 hex digits"),
    ("vocab_size", "x", "'vocab_size' must be an integer >= 5"),
    ("vocab_size", ..., "'vocab_size' must be an integer >= 5"),
    ("max_positions", 0, "'max_positions' must be an integer >= 1"),
    ("cache.0.heads", "4", "'cache[0]' must hold integers >= 1"),
    ("cache.0.head_dim", -1, "'cache[0]' must hold integers >= 1"),
    ("cache", ..., "'cache' must be a non-empty list"),
    ("decoder_layers", 7, "'decoder_layers' must be the number of cache entries"),
    ("decoder_step", ..., "'decoder_step' must name the graph's inputs and outputs"),
    ("encoder.outputs", ["padding_mask"], "'encoder' must name the graph's inputs"),
])
def test_every_onnx_json_field_is_checked_in_one_line(exported, tmp_path, path, value, needle):
    from automoe.onnx_export import read_onnx_meta

    _, directory = exported
    copy = tmp_path / "onnx"
    shutil.copytree(directory, copy)
    meta = json.loads((copy / "onnx.json").read_text())
    (copy / "onnx.json").write_text(json.dumps(_tampered(meta, path, value)))
    with pytest.raises(ValueError, match=re.escape(needle)) as err:
        read_onnx_meta(copy)
    assert str(copy / "onnx.json") in str(err.value) and "\n" not in str(err.value)


def test_graphs_are_checked_against_their_manifest_and_the_models_config(exported, exports,
                                                                         tmp_path, capsys):
    """Another export's graphs copied in, a link out of the directory, renamed graph
    inputs, and a whole ONNX dir of another architecture are each refused in one line."""
    import onnx

    from automoe.cli import main
    from automoe.io_utils import file_sha256

    model, directory = exported
    other = exports("moe" if model.config.is_dense else "dense")[1]
    copy = tmp_path / "onnx"
    shutil.copytree(directory, copy)
    shutil.copyfile(other / "decoder_step.onnx", copy / "decoder_step.onnx")
    with pytest.raises(ValueError, match="decoder_step.onnx: not the graph onnx.json describes"):
        check_onnx_dir(copy)
    (copy / "decoder_step.onnx").unlink()
    (copy / "decoder_step.onnx").symlink_to(directory / "decoder_step.onnx")
    with pytest.raises(ValueError, match="decoder_step.onnx: a link"):
        check_onnx_dir(copy)
    (copy / "decoder_step.onnx").unlink()
    graph = onnx.load(str(directory / "encoder.onnx"))
    graph.graph.output[0].name = "mask"  # (the graph itself stays valid)
    for node in graph.graph.node:
        node.output[:] = ["mask" if o == "padding_mask" else o for o in node.output]
        node.input[:] = ["mask" if o == "padding_mask" else o for o in node.input]
    onnx.save(graph, str(copy / "encoder.onnx"))
    shutil.copyfile(directory / "decoder_step.onnx", copy / "decoder_step.onnx")
    meta = json.loads((copy / "onnx.json").read_text())
    meta["sha256"]["encoder.onnx"] = file_sha256(copy / "encoder.onnx")
    (copy / "onnx.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="encoder.onnx: the graph's inputs/outputs"):
        check_onnx_dir(copy)
    # a model dir whose onnx/ holds another architecture's (consistent) export
    model_dir = tmp_path / "model"
    model.save(model_dir)
    shutil.copytree(other, model_dir / "onnx")
    assert main(["onnx", str(model_dir), "--check"]) == 2
    err = capsys.readouterr().err
    assert "graphs of architecture" in err and "config.json" in err
    # ... whose onnx.json was rewritten to claim this model's architecture: each graph's own
    # metadata says otherwise, and so do the cache sizes the config implies
    forged = json.loads((model_dir / "onnx" / "onnx.json").read_text())
    forged["architecture_key"] = model.config.key()
    (model_dir / "onnx" / "onnx.json").write_text(json.dumps(forged))
    with pytest.raises(ValueError, match="encoder.onnx: a graph of architecture"):
        check_onnx_dir(model_dir / "onnx")
    for name in ("encoder.onnx", "decoder_step.onnx"):
        graph = onnx.load(str(model_dir / "onnx" / name))
        onnx.helper.set_model_props(graph, {"automoe.architecture_key": model.config.key()})
        onnx.save(graph, str(model_dir / "onnx" / name))
        forged["sha256"][name] = file_sha256(model_dir / "onnx" / name)
    (model_dir / "onnx" / "onnx.json").write_text(json.dumps(forged))
    assert check_onnx_dir(model_dir / "onnx")["architecture_key"] == model.config.key()
    assert main(["onnx", str(model_dir), "--check"]) == 2
    assert "is not the cache of the architecture in" in capsys.readouterr().err
    # a graph whose cache sizes differ from what onnx.json says
    meta = json.loads((directory / "onnx.json").read_text())
    meta["cache"][0]["head_dim"] += 1
    shutil.rmtree(model_dir / "onnx")
    shutil.copytree(directory, model_dir / "onnx")
    (model_dir / "onnx" / "onnx.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'past_key_0' has sizes"):
        check_onnx_dir(model_dir / "onnx")
    shutil.rmtree(model_dir / "onnx")
    shutil.copytree(directory, model_dir / "onnx")
    assert main(["onnx", str(model_dir), "--check"]) == 0


def test_onnxruntime_refuses_what_torch_refuses_before_decoding(exported):
    from automoe.decoding import InputTooLong, translate_ids
    from automoe.onnx_runtime import OrtTransformer

    model, directory = exported
    runtime = OrtTransformer(directory, providers=["CPUExecutionProvider"])
    limit = model.options.max_positions
    assert runtime.max_positions == limit
    long = [[5] * limit]  # + EOS: one more than the positions
    for m in (model, runtime):
        with pytest.raises(InputTooLong, match=f"sentence 2: {limit + 1} tokens with EOS"):
            translate_ids(m, [[6, 7], *long], beam=1)


def test_moe_layers_gather_each_experts_tokens(exported):
    """The graphs run each expert on the tokens that picked it: one ``NonZero`` per expert
    of every MoE layer (a dense layer has none), none elsewhere."""
    model, directory = exported
    cfg = model.config
    for graph, dims in (("encoder.onnx", cfg.encoder_expert_dims),
                        ("decoder_step.onnx", cfg.decoder_expert_dims)):
        ops = [n.op_type for n in onnx.load(str(directory / graph)).graph.node]
        assert ops.count("NonZero") == sum(len(d) for d in dims if len(d) > 1), graph


def test_missing_or_corrupted_graph_names_the_file(exported, tmp_path):
    _, directory = exported
    copy = tmp_path / "onnx"
    shutil.copytree(directory, copy)
    step = copy / "decoder_step.onnx"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])
    with pytest.raises(ValueError, match="decoder_step.onnx"):
        check_onnx_dir(copy)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="encoder.onnx"):
        check_onnx_dir(copy)
    (copy / "onnx.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="onnx.json"):
        check_onnx_dir(copy)


def test_greedy_and_beam_translations_on_onnxruntime_are_token_identical(exported):
    from automoe.decoding import beam_search, greedy_decode
    from automoe.onnx_runtime import OrtTransformer

    model, directory = exported
    runtime = OrtTransformer(directory, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(2, 10, (20,), generator=g)
    src = torch.full((20, int(lengths.max())), PAD_ID)
    for i, n in enumerate(lengths.tolist()):
        src[i, : n - 1] = torch.randint(EOS_ID + 1, VOCAB, (n - 1,), generator=g)
        src[i, n - 1] = EOS_ID
    want = greedy_decode(model, src, max_len_b=5)
    got = greedy_decode(runtime, src, max_len_b=5)
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-3)
    want = beam_search(model, src, beam=3, lenpen=0.6, max_len_b=5)
    got = beam_search(runtime, src, beam=3, lenpen=0.6, max_len_b=5)
    assert [h.tokens for h in got] == [h.tokens for h in want]


@pytest.mark.parametrize("kind", ["moe", "dense"])
def test_a_successful_export_prints_and_warns_nothing(exports, kind):
    said = exports(kind)[2]
    assert said == {"warnings": [], "output": []}


def test_what_an_export_says_is_seen():
    """(the oracle of the test above: C++ output, Python output and warnings all land)"""
    with _everything_said() as said:
        print("py")
        warnings.warn("careful", UserWarning, stacklevel=1)
        os.write(2, b"c++\n")
    assert said["warnings"] == ["careful"]
    assert sorted(said["output"]) == ["c++\n", "py\n"]
