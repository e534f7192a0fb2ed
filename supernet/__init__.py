"""Torch models: the weight-sharing `SuperTransformer` (elastic dense + heterogeneous MoE
encoder-decoder), the static `Transformer` it exports, and their shared parts. The supernet
training loop is `supernet.training.loop` (imported on demand).

Names are imported lazily, so the torch-free parts (`supernet.options`, `supernet.params`,
`supernet.tokens`, the training schedules) load without torch.
"""

from __future__ import annotations

from typing import Any

from search_spaces.lazy import lazy_attribute

_EXPORTS = {
    "SuperTransformer": "supertransformer",
    "SubnetView": "supertransformer",
    "Transformer": "transformer",
    "ModelOptions": "options",
    "MoEAux": "outputs",
    "EncoderOut": "outputs",
    "DecoderCache": "outputs",
    "ParamCounts": "params",
    "count_params": "params",
    "PAD_ID": "tokens",
    "UNK_ID": "tokens",
    "BOS_ID": "tokens",
    "EOS_ID": "tokens",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)
