"""Torch models: the weight-sharing `SuperTransformer` (elastic dense + heterogeneous MoE
encoder-decoder), the static `Transformer` it exports, and their shared parts. The supernet
training loop is `supernet.training.loop` (imported on demand).

Names are imported lazily, so the torch-free parts (`supernet.options`, `supernet.params`,
`supernet.tokens`, the training schedules) load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    if name not in _EXPORTS:
        raise AttributeError(f"module 'supernet' has no attribute {name!r}")
    return getattr(importlib.import_module(f"supernet.{_EXPORTS[name]}"), name)
