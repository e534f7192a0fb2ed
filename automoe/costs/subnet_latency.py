"""One subnet's latency as ``automoe latency measure`` measures it: the protocol's sentences
from a prepared data dir, the supernet's weights id, and `measure_subnet` (random or
supernet weights, optionally through the `LatencyCache`).

It sits above `automoe.costs.latency` (the protocol and the measurement),
`automoe.costs.latency_cache` and `automoe.costs.dataset` (the random model), which all
import the protocol. torch is imported where a measurement runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from automoe.costs.dataset import random_model
from automoe.costs.latency import LatencyProtocol, LatencyResult, measure_latency
from automoe.costs.latency_cache import LatencyCache
from automoe.data import load_split, read_meta
from automoe.io_utils import file_sha256
from supernet.tokens import EOS_ID

if TYPE_CHECKING:
    from search_spaces.config import SubnetConfig
    from supernet.supertransformer import SuperTransformer
    from supernet.transformer import Transformer

__all__ = ["data_sentences", "supernet_weights_id", "measure_subnet"]


def data_sentences(data_dir: str | Path, split: str = "valid",
                   n: int = 10) -> tuple[int, tuple[tuple[int, ...], ...]]:
    """``(vocab_size, sentences)`` of a prepared data dir: the first ``n`` source sentences
    of ``split`` as EOS-terminated token ids (`LatencyProtocol.sentences`), and the data's
    vocabulary, which a protocol over its ids needs."""
    vocab_size = int(read_meta(data_dir)["vocab_size"])
    data = load_split(data_dir, split)
    n = min(n, len(data))
    if n < 1:
        raise ValueError(f"{data_dir}: split {split!r} has no sentences")
    return vocab_size, tuple(tuple(int(t) for t in data.src[i]) + (EOS_ID,) for i in range(n))


def supernet_weights_id(path: str | Path, which: str = "last") -> str:
    """`LatencyProtocol.weights` of a trained supernet (run dir, ``checkpoint_{which}.pt``,
    or checkpoint file): ``supernet:`` and the first 16 hex digits of the file's sha256."""
    file = Path(path)
    file = file / f"checkpoint_{which}.pt" if file.is_dir() else file
    return f"supernet:{file_sha256(file)[:16]}"


def measure_subnet(config: SubnetConfig, protocol: LatencyProtocol, *,
                   supernet: SuperTransformer | None = None,
                   cache: str | Path | None = None) -> tuple[LatencyResult, bool]:
    """``(result, cached)``: the latency of subnet ``config`` under ``protocol``, measured on
    its model extracted from ``supernet`` (a trained `SuperTransformer`, named by
    ``protocol.weights``: its routers route like the trained model), or else on a randomly
    initialised model seeded by ``protocol.seed``. With ``cache`` (a `LatencyCache` file) a
    measurement with the same fingerprint, subnet and protocol is reused (``cached`` True)
    and a new one is appended."""

    def build() -> Transformer:
        if supernet is None:
            return random_model(config, protocol.vocab_size, seed=protocol.seed,
                                device=protocol.device, dtype=protocol.dtype)
        import torch

        model = supernet.extract(config)
        return model.to(device=protocol.device, dtype=getattr(torch, protocol.dtype)).eval()

    if cache is not None:
        return LatencyCache(cache).measure(config.key(), protocol, build)
    return measure_latency(build(), protocol, subnet_key=config.key()), False
