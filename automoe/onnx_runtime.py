"""The exported ONNX graphs (`automoe.onnx_export`) in ONNX Runtime, behind the seq2seq
protocol of docs/contracts.md, so `automoe.decoding` (greedy and beam search) runs on them.

``OrtTransformer(MODEL_DIR / "onnx")`` has ``encode(src) -> OrtEncoderOut``,
``decode(prev, enc, cache=cache) -> (logits, None)``, ``new_cache()``,
``enc.index_select(order)`` and ``cache.reorder(order)``; tensors in and out are torch CPU
tensors (the graphs run on numpy arrays). There are no MoE statistics: ``aux`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automoe.onnx_export import check_onnx_dir

__all__ = ["OrtTransformer", "OrtEncoderOut", "OrtCache"]


@dataclass(frozen=True)
class OrtEncoderOut:
    """padding_mask [B, S] bool and, per decoder layer, the cross-attention key and value
    [B, cross_heads, span·S, head_dim] float32 (cross_key_0, cross_value_0, ...), as numpy
    arrays: computed once by the encoder graph, read by every decoder step."""

    padding_mask: np.ndarray
    cross_kv: tuple[np.ndarray, ...]

    def index_select(self, order: torch.Tensor) -> OrtEncoderOut:
        """Rows ``order`` [B'] of the batch."""
        idx = order.cpu().numpy()
        return OrtEncoderOut(np.ascontiguousarray(self.padding_mask[idx]),
                             tuple(np.ascontiguousarray(t[idx]) for t in self.cross_kv))


@dataclass
class OrtCache:
    """The self-attention cache: past_key_0, past_value_0, ... each [B, heads, L, head_dim]
    (empty until the first step)."""

    kv: list[np.ndarray] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.kv else int(self.kv[0].shape[2])

    def reorder(self, order: torch.Tensor) -> None:
        """Keeps rows ``order`` [B'] (beam search), in place."""
        idx = order.cpu().numpy()
        self.kv = [np.ascontiguousarray(t[idx]) for t in self.kv]


class OrtTransformer:
    """Encoder and decoder-step sessions of one ONNX dir (checked first: a missing or
    corrupted file raises naming it). ``providers`` default: CUDA when ONNX Runtime has it,
    then CPU. ``threads`` sets each session's intra-op threads (None: ONNX Runtime's
    default)."""

    training = False  # the decoders' eval-mode switch finds nothing to switch

    def __init__(self, directory: str | Path, *, providers: list[str] | None = None,
                 threads: int | None = None, config: Any = None,
                 config_file: str | Path = "config.json") -> None:
        import onnxruntime as ort

        self.path = Path(directory)
        # with the model dir's config (`SubnetConfig`), the graphs must be of that architecture
        self.meta = check_onnx_dir(self.path, config, config_file=config_file)
        self.vocab_size = int(self.meta["vocab_size"])
        # longest source or target the graphs were exported for (None: an older export)
        self.max_positions: int | None = self.meta.get("max_positions")
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in ort.get_available_providers()]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.encoder = self._session(ort, "encoder.onnx", options, providers)
        self.step = self._session(ort, "decoder_step.onnx", options, providers)
        self._step_inputs = self.meta["decoder_step"]["inputs"]

    def _session(self, ort: Any, name: str, options: Any, providers: list[str]) -> Any:
        path = self.path / name
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # ONNX Runtime raises its own types for bad graphs
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({err})") from None

    def eval(self) -> OrtTransformer:
        return self

    def new_cache(self) -> OrtCache:
        return OrtCache()

    def encode(self, src_tokens: torch.Tensor) -> OrtEncoderOut:
        """src_tokens [B, S] -> OrtEncoderOut."""
        mask, *cross = self.encoder.run(None, {"src_tokens": src_tokens.cpu().numpy()})
        return OrtEncoderOut(mask, tuple(cross))

    def decode(self, prev_tokens: torch.Tensor, enc: OrtEncoderOut,
               cache: OrtCache | None = None) -> tuple[torch.Tensor, None]:
        """prev_tokens [B, T] (the next T tokens after the cache's) -> (logits [B, T, V],
        None); one graph call per token, the cache ends T longer. Without a cache, T tokens
        from position 0 (teacher forcing)."""
        cache = OrtCache() if cache is None else cache
        if not cache.kv:
            b = prev_tokens.shape[0]
            cache.kv = [np.zeros((b, c["heads"], 0, c["head_dim"]), np.float32)
                        for c in self.meta["cache"] for _ in range(2)]
        tokens = prev_tokens.cpu().numpy()
        out = []
        for t in range(tokens.shape[1]):
            feeds = dict(zip(self._step_inputs, [tokens[:, t:t + 1], enc.padding_mask,
                                                 *enc.cross_kv, *cache.kv], strict=True))
            logits, *cache.kv = self.step.run(None, feeds)
            out.append(logits)
        return torch.from_numpy(np.concatenate(out, axis=1)), None
