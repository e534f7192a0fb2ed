"""Weight-only, per-output-channel quantization of expert weights (int8 and int4).

A weight matrix ``w [out, in]`` at ``b`` bits is stored as integers ``q [out, in]`` in
``[-(2^(b-1) - 1), 2^(b-1) - 1]`` and one fp32 scale per output row, symmetric (no zero
point): ``scale = max|w_row| / (2^(b-1) - 1)``, ``q = round(w / scale)``, and the weight it
stands for is ``q * scale``. Activations stay in floating point.

Kernels (CPU, this torch): int8 runs ``torch._weight_int8pack_mm`` (int8 weights times fp32
activations, scaled per output channel, no dequantized copy of the weight). int4 is
*simulated*: the weights are rounded to 4-bit values but the product runs on the
dequantized fp32 matrix, because torch's CPU int4 kernel (``_weight_int4pack_mm_for_cpu``)
is group-wise with groups of 32-256 input channels, not per output channel. int4 values are
held one per int8 in memory and packed two per byte in files (`pack_int4` / `unpack_int4`);
`supernet.params.matrix_bytes` counts them packed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from supernet.functional import ExpertWeights

__all__ = [
    "QUANT_BITS",
    "QuantizedWeight",
    "QuantizedExpert",
    "quantize_weight",
    "dequantize",
    "quantized_linear",
    "quantize_expert",
    "quantized_expert_ffn",
    "pack_int4",
    "unpack_int4",
]

QUANT_BITS = (4, 8)


class QuantizedWeight(NamedTuple):
    """A weight-only quantized matrix: q [out, in] int8 (int4 values for 4 bits), scale
    [out] fp32, and the bits."""

    q: torch.Tensor
    scale: torch.Tensor
    bits: int


class QuantizedExpert(NamedTuple):
    """One FFN expert with quantized matrices: w1 [h, d], w2 [d, h]; fp32 biases b1 [h], b2 [d]."""

    w1: QuantizedWeight
    b1: torch.Tensor
    w2: QuantizedWeight
    b2: torch.Tensor


def quantize_weight(w: torch.Tensor, bits: int) -> QuantizedWeight:
    """Symmetric per-output-channel quantization of ``w [out, in]`` to ``bits`` (4 or 8)."""
    if bits not in QUANT_BITS:
        raise ValueError(f"quantize_weight: bits must be one of {list(QUANT_BITS)}, got {bits!r}")
    if w.dim() != 2:
        raise ValueError(f"quantize_weight: expected a matrix [out, in], got shape {tuple(w.shape)}")
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().float()
    # an all-zero row keeps scale 1 (any scale represents it exactly), never a division by 0
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return QuantizedWeight(q.contiguous(), scale.contiguous(), bits)


def dequantize(w: QuantizedWeight) -> torch.Tensor:
    """The fp32 matrix [out, in] that ``w`` stands for: ``q * scale``."""
    return w.q.float() * w.scale[:, None]


def quantized_linear(x: torch.Tensor, w: QuantizedWeight, bias: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """``x [..., in] @ dequantize(w).T + bias`` -> [..., out]; int8 on CPU in fp32 runs the
    int8 kernel, everything else (int4, other devices or dtypes, autocast) the dequantized
    matrix (under autocast ``F.linear`` casts as every other matmul of the model)."""
    if (w.bits == 8 and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")):
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # the kernel takes a 2-d input
        y = torch._weight_int8pack_mm(flat, w.q, w.scale).reshape(*x.shape[:-1], -1)
        return y if bias is None else y + bias
    return F.linear(x, dequantize(w).to(x.dtype), bias)


def quantize_expert(w: ExpertWeights, bits: int) -> QuantizedExpert:
    """Both matrices of an expert at ``bits``; biases stay fp32 (detached copies)."""
    return QuantizedExpert(quantize_weight(w.w1, bits), w.b1.detach().float(),
                           quantize_weight(w.w2, bits), w.b2.detach().float())


def quantized_expert_ffn(x: torch.Tensor, w: QuantizedExpert) -> torch.Tensor:
    """`supernet.functional.expert_ffn` in eval mode on a quantized expert:
    ``fc2(relu(fc1(x)))``, x [N, d] -> [N, d]."""
    return quantized_linear(F.relu(quantized_linear(x, w.w1, w.b1)), w.w2, w.b2)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int4 values q [out, in] (int8 in [-8, 7]) -> uint8 [out, ceil(in / 2)], two per byte:
    column 2j in the low nibble, column 2j+1 in the high one, each as ``value + 8``; an odd
    row is padded with a zero value. On the meta device only the shape is made."""
    if q.dim() != 2:
        raise ValueError(f"pack_int4: expected a matrix [out, in], got shape {tuple(q.shape)}")
    if q.is_meta:  # (operators on meta tensors load torch's meta kernels: seconds)
        return torch.empty(q.shape[0], -(-q.shape[1] // 2), dtype=torch.uint8, device="meta")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    if u.shape[1] % 2:
        u = torch.cat([u, torch.full_like(u[:, :1], 8)], dim=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """`pack_int4`'s inverse: uint8 [out, ceil(in / 2)] -> int8 [out, in_features]."""
    if packed.dim() != 2 or packed.shape[1] != -(-in_features // 2):
        raise ValueError(f"unpack_int4: expected [out, {-(-in_features // 2)}] bytes for "
                         f"{in_features} columns, got shape {tuple(packed.shape)}")
    u = packed.to(torch.int16)
    both = torch.stack([u & 0xF, u >> 4], dim=2).reshape(packed.shape[0], -1)
    return (both[:, :in_features] - 8).to(torch.int8).contiguous()
