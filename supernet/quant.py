"""Weight-only, per-output-channel quantization of expert weights (int8 and int4).

A weight matrix ``w [out, in]`` at ``b`` bits is stored as integers ``q [out, in]`` in
``[-(2^(b-1) - 1), 2^(b-1) - 1]`` and one fp32 scale per output row, symmetric (no zero
point): ``scale = max|w_row| / (2^(b-1) - 1)``, ``q = round(w / scale)``, and the weight it
stands for is ``q * scale``.

Kernels (CPU), chosen by measurement (``scripts/bench_quant.py``, docs/benchmarks.md):

- ``"dynamic"`` (the default where torch has the x86/fbgemm quantized engine): fbgemm's
  ``quantized.linear_dynamic`` on the per-channel int8 weight, prepacked once per weight.
  Activations are quantized to int8 per call (dynamic, ``reduce_range`` as fbgemm needs on
  CPUs without VNNI), so results differ from fp32 on the dequantized weight by ~1-3 %
  relative. On the 2-vCPU AVX2 development VM it ran an expert 1.4-2.6x faster than fp32.
  These ops are deprecated in torch 2.13 (they warn; the warning is silenced here); when
  they are gone the kernel falls back to ``"weight_only"``.
- ``"weight_only"``: ``torch._weight_int8pack_mm`` (int8 weights times fp32 activations,
  exact up to fp32 rounding). On that AVX2 VM it was 7-40x *slower* than fp32 (its fast
  path needs AVX-512), so it is the fallback, and the reference in tests.
- ``"onnx"``: ONNX's dynamic int8 arithmetic, emulated exactly (`onnx_int8_linear`):
  activations quantized to uint8 per tensor by ``DynamicQuantizeLinear`` (full 8 bits,
  asymmetric), an integer product, then both scales. The ONNX export traces this op into
  ``DynamicQuantizeLinear`` + ``MatMulInteger`` (`automoe.onnx_export`), so a torch model
  on this kernel computes what ONNX Runtime computes from the exported graph (tests). It
  runs int4 matrices too: in ONNX they are int8 matrices with values in [-7, 7].

int4 is *simulated*: the weights are rounded to 4-bit values but the product runs on the
dequantized fp32 matrix, because torch's CPU int4 kernel (``_weight_int4pack_mm_for_cpu``)
is group-wise with groups of 32-256 input channels, not per output channel. int4 values are
held one per int8 in memory and packed two per byte in files (`pack_int4` / `unpack_int4`);
`supernet.params.matrix_bytes` counts them packed.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

if TYPE_CHECKING:
    from supernet.functional import ExpertWeights

__all__ = [
    "QUANT_BITS",
    "QuantizedWeight",
    "QuantizedExpert",
    "quantize_weight",
    "dequantize",
    "quantized_linear",
    "onnx_int8_linear",
    "INT8_KERNELS",
    "int8_kernel",
    "quantize_expert",
    "quantized_expert_ffn",
    "pack_int4",
    "unpack_int4",
]

QUANT_BITS = (4, 8)
INT8_KERNELS = ("dynamic", "weight_only", "onnx")
# None: "dynamic" where the fbgemm engine exists, else "weight_only" (tests set it)
INT8_KERNEL: str | None = None
# q tensor -> (its version, fbgemm's packed weight / the fp32 matrix of simulated int4):
# entries die with q, and an in-place change of q (loading weights) bumps its version
_PACKED: Any = WeakIdKeyDictionary()
_DEQUANTIZED: Any = WeakIdKeyDictionary()


def int8_kernel() -> str:
    """The int8 kernel in use: `INT8_KERNEL`, or the measured default for this torch."""
    if INT8_KERNEL is not None:
        if INT8_KERNEL not in INT8_KERNELS:
            raise ValueError(f"supernet.quant.INT8_KERNEL: expected one of {INT8_KERNELS}, "
                             f"got {INT8_KERNEL!r}")
        return INT8_KERNEL
    return _default_int8_kernel()


@functools.cache
def _default_int8_kernel() -> str:
    # asked once per process: `quantized_linear` runs in the decoding loop
    engines = torch.backends.quantized.supported_engines
    has_ops = hasattr(torch.ops.quantized, "linear_dynamic")
    return "dynamic" if has_ops and ("x86" in engines or "fbgemm" in engines) else "weight_only"


def _stamp(w: QuantizedWeight) -> tuple[int, int] | None:
    """The versions of ``w``'s tensors (None for inference tensors, which track none)."""
    if w.q.is_inference() or w.scale.is_inference():
        return None
    return w.q._version, w.scale._version


def _packed(w: QuantizedWeight) -> Any:
    """fbgemm's prepacked form of ``w`` (cached for as long as ``w.q`` lives)."""
    hit = _PACKED.get(w.q)
    if hit is None or hit[0] != _stamp(w):
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13
            warnings.simplefilter("ignore")
            zero = torch.zeros(w.q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(w.q, w.scale.double(), zero, 0)
            hit = _PACKED[w.q] = (_stamp(w), torch.ops.quantized.linear_prepack(qw, None))
    return hit[1]


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
    int8 kernel (`int8_kernel`), everything else (int4, other devices or dtypes, autocast)
    the dequantized matrix (under autocast ``F.linear`` casts as every other matmul).
    Under ``torch.export`` (the ONNX export) and on kernel ``"onnx"`` every quantized matrix,
    int4 too (its values are int8 values), runs `onnx_int8_linear`."""
    kernel = "onnx" if torch.compiler.is_exporting() else int8_kernel()
    if kernel == "onnx":
        zero = torch.zeros(w.q.shape[0], dtype=x.dtype, device=x.device)
        return onnx_int8_linear(x, w.q, w.scale, zero if bias is None else bias)
    if (w.bits == 8 and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")):
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # the kernels take a 2-d input
        if kernel == "dynamic":
            y = torch.ops.quantized.linear_dynamic(flat, _packed(w), True)
        else:
            y = torch._weight_int8pack_mm(flat, w.q, w.scale)
        y = y.reshape(*x.shape[:-1], w.q.shape[0])  # (-1 is ambiguous for 0 rows)
        return y if bias is None else y + bias
    if w.bits == 4:
        # simulated: dequantize once per weight, not per call, so int4 costs what fp32 does
        hit = _DEQUANTIZED.get(w.q)
        if hit is None or hit[0] != _stamp(w):
            hit = _DEQUANTIZED[w.q] = (_stamp(w), dequantize(w))
        return F.linear(x, hit[1].to(x.dtype), bias)
    return F.linear(x, dequantize(w).to(x.dtype), bias)


@torch.library.custom_op("automoe::onnx_int8_linear", mutates_args=())
def onnx_int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's dynamic int8 linear, exactly: x [..., in] fp32, q [out, in] int8,
    scale [out], bias [out] -> [..., out].

    ``DynamicQuantizeLinear`` (ONNX spec, as ORT computes it): over the whole of ``x``,
    lo = min(0, min x), hi = max(0, max x), s = (hi - lo) / 255 (1 where hi = lo), zero
    point z = round(-lo / s) in [0, 255], x_q = clamp(round(x / s) + z, 0, 255), rounding
    half to even. Then ``MatMulInteger``: the exact integer product (x_q - z) q^T, cast to
    fp32 and scaled by s · scale, plus bias. Every quantized row widens s, so callers zero
    the rows an expert does not serve (0 is always in the range)."""
    lo = x.detach().amin().clamp(max=0) if x.numel() else x.new_zeros(())
    hi = x.detach().amax().clamp(min=0) if x.numel() else x.new_zeros(())
    s = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
    z = torch.round((0 - lo / s).clamp(0, 255))
    xq = (torch.round(x / s) + z).clamp(0, 255)
    acc = (xq.double() - z.double()) @ q.double().T  # exact: integers below 2^53
    return acc.float() * (s * scale) + bias


@onnx_int8_linear.register_fake
def _onnx_int8_linear_shape(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                            bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], q.shape[0])


def quantize_expert(w: ExpertWeights, bits: int) -> QuantizedExpert:
    """Both matrices of an expert at ``bits``; biases stay fp32 (detached copies)."""
    return QuantizedExpert(quantize_weight(w.w1, bits), w.b1.detach().float(),
                           quantize_weight(w.w2, bits), w.b2.detach().float())


def quantized_expert_ffn(x: torch.Tensor, w: QuantizedExpert) -> torch.Tensor:
    """`supernet.functional.expert_ffn` in eval mode on a quantized expert:
    ``fc2(relu(fc1(x)))``, x [N, d] -> [N, d]. Kernels that quantize activations per call
    (``"dynamic"``, ``"onnx"``) take their range from x, so both MoE dispatches run each
    expert on its own tokens alone."""
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
