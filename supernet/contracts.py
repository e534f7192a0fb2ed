"""The seq2seq model contract of docs/contracts.md, as typing Protocols.

Decoding (`automoe.decoding`), latency (`automoe.costs.latency`) and measured FLOPs
(`automoe.costs.measured_flops`) run on two implementers: the supernet's bound view
(`supernet.supertransformer.SubnetView`) and the exported `supernet.transformer.Transformer`.
The protocols live in ``supernet``, the lowest layer that holds both implementers: they and
their users in ``automoe`` import them without an upward import (``search_spaces`` below
knows nothing of models). torch and the concrete output types are imported for type checking
only, so this module loads without torch like `supernet.tokens` (the light CLI commands
import `automoe.costs`).

Both protocols are ``runtime_checkable``: ``isinstance`` checks that the members exist, not
their signatures (mypy checks those).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search_spaces.config import SubnetConfig
    from supernet.outputs import DecoderCache, EncoderOut, MoEAux  # noqa: F401 (strings below)

__all__ = ["EncoderState", "DecoderState", "Seq2SeqModel", "SubnetModel", "EncT", "CacheT",
           "missing_members"]

_Self = TypeVar("_Self", bound="EncoderState")


@runtime_checkable
class EncoderState(Protocol):
    """What decoding needs of an encoder output (`supernet.outputs.EncoderOut`)."""

    def index_select(self: _Self, order: torch.Tensor) -> _Self:
        """Rows ``order`` [B'] of the batch (beam expansion, finished sentences leaving)."""
        ...


@runtime_checkable
class DecoderState(Protocol):
    """What decoding needs of an incremental cache (`supernet.outputs.DecoderCache`)."""

    def reorder(self, order: torch.Tensor) -> None:
        """Keeps rows ``order`` [B'] of every cached tensor, in place."""
        ...


EncT = TypeVar("EncT", bound=EncoderState)
CacheT = TypeVar("CacheT", bound=DecoderState)


@runtime_checkable
class Seq2SeqModel(Protocol[EncT, CacheT]):
    """An encoder-decoder that decodes incrementally: what beam search and greedy decoding
    need. Generic in its encoder output and cache types, which decoding passes back to it
    unchanged (the two implementers use `EncoderOut` and `DecoderCache`)."""

    @property
    def vocab_size(self) -> int:
        """V, the size of the output distribution (token ids are below it)."""
        ...

    @property
    def training(self) -> bool:
        """Whether dropout and router noise are on; decoding switches them off."""
        ...

    def train(self, mode: bool = True) -> object:
        ...

    def eval(self) -> object:
        ...

    def encode(self, src_tokens: torch.Tensor) -> EncT:
        """src_tokens [B, S] (EOS-terminated, PAD-right-padded) -> encoder output."""
        ...

    def decode(self, prev_tokens: torch.Tensor, enc: EncT, cache: CacheT | None = None
               ) -> tuple[torch.Tensor, MoEAux | None]:
        """prev_tokens [B, T] -> (logits [B, T, V], aux); with ``cache``, T is the new
        token(s) only and the cache grows."""
        ...

    def new_cache(self) -> CacheT:
        """An empty cache for `decode`."""
        ...


@runtime_checkable
class SubnetModel(Seq2SeqModel["EncoderOut", "DecoderCache"], Protocol):
    """A `Seq2SeqModel` of one subnet with its weights: what latency and measured FLOPs
    need on top of decoding (the parameters' device and dtype, the architecture, one
    teacher-forced forward)."""

    @property
    def config(self) -> SubnetConfig:
        ...

    def parameters(self) -> Iterator[nn.Parameter]:
        ...

    def __call__(self, src_tokens: torch.Tensor, prev_tokens: torch.Tensor
                 ) -> tuple[torch.Tensor, MoEAux]:
        """src [B, S], prev [B, T] -> (logits [B, T, V], encoder + decoder aux)."""
        ...


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` (and its protocol bases) that ``obj`` lacks, sorted."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base in (object, Protocol) or base.__module__ == "typing":
            continue
        names.update(n for n in vars(base) if not n.startswith("_") or n == "__call__")
        names.update(getattr(base, "__annotations__", {}))
    return sorted(n for n in names if not hasattr(obj, n))
