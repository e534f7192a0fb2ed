"""Torch models: the weight-sharing `SuperTransformer` (elastic dense + heterogeneous MoE
encoder-decoder), the static `Transformer` it exports, and their shared parts. The supernet
training loop is `supernet.train` (imported on demand)."""

from supernet.options import ModelOptions
from supernet.outputs import DecoderCache, EncoderOut, MoEAux
from supernet.params import ParamCounts, count_params
from supernet.supertransformer import SubnetView, SuperTransformer
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from supernet.transformer import Transformer

__all__ = [
    "SuperTransformer",
    "SubnetView",
    "Transformer",
    "ModelOptions",
    "MoEAux",
    "EncoderOut",
    "DecoderCache",
    "ParamCounts",
    "count_params",
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
]
