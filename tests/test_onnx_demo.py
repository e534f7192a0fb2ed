"""ONNX export of random `demo`-space subnets (random weights), dense and MoE: ONNX Runtime
(`OrtTransformer`) gives the torch model's logits within 1e-4, teacher-forced through the
cache and in greedy incremental decoding on each runtime's own choices."""

from __future__ import annotations

import pytest
import torch

from search_spaces.config import SubnetConfig
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID
from supernet.transformer import Transformer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from test_onnx_export import pick_subnet  # noqa: E402

from automoe.onnx_export import export_onnx  # noqa: E402
from automoe.onnx_runtime import OrtTransformer  # noqa: E402

VOCAB = 40


def pick(kind: str) -> SubnetConfig:
    """A random demo subnet; "moe" also has a decoder layer reading 2 encoder layers. The
    shallowest of eight such samples: every extra layer is one more of the same kinds to
    trace, and tracing takes most of this test's time."""
    samples = [pick_subnet("demo", kind, seed=s, tries=2000, reads_layers=2) for s in range(8)]
    return min(samples, key=lambda c: len(c.encoder_heads) + len(c.decoder_heads))


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_random_demo_subnet_in_onnxruntime_equals_torch(kind, tmp_path):
    model = Transformer(pick(kind), VOCAB, seed=2).eval()
    runtime = OrtTransformer(export_onnx(model, tmp_path / "onnx"),
                             providers=["CPUExecutionProvider"], threads=1)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(EOS_ID + 1, VOCAB, (3, 8), generator=g)
    src[:, -1] = EOS_ID
    src[2, 5:] = PAD_ID  # a shorter sentence
    src[2, 4] = EOS_ID
    prev = torch.randint(EOS_ID + 1, VOCAB, (3, 6), generator=g)
    prev[:, 0] = BOS_ID
    with torch.no_grad():
        enc = model.encode(src)
        want, _ = model.decode(prev, enc)  # teacher forcing, no cache: [B, T, V]
        got, _ = runtime.decode(prev, runtime.encode(src))  # one graph call per token
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)

        cache, ort_enc, ort_cache = model.new_cache(), runtime.encode(src), runtime.new_cache()
        mine = theirs = torch.full((3, 1), BOS_ID)
        for _ in range(6):
            want, _ = model.decode(mine[:, -1:], enc, cache=cache)
            got, _ = runtime.decode(theirs[:, -1:], ort_enc, cache=ort_cache)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
            mine = torch.cat([mine, want[:, -1].argmax(-1, keepdim=True)], dim=1)
            theirs = torch.cat([theirs, got[:, -1].argmax(-1, keepdim=True)], dim=1)
            assert torch.equal(mine, theirs)
