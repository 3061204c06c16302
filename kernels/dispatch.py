"""One dispatch function per matmul family: it picks the kernel and reports which path ran.

    qmatmul(x, qweight, scales, zeros, *, bits, group_size, in_features, ...) -> (y, path)

Paths for the weight-only format (docs/architecture.md):
    "triton-gemv" / "triton-gemm"    fused dequant-matmul on CUDA for fp16/bf16/fp32 x: the CUDA-core GEMV
    / "triton-dequant-dense"         for one row, the tensor-core GEMM (split-K for small M) above, and the
                                     weight dequantized once + one dense matmul for long prefills; a
                                     QuantLinear on CUDA builds the GPU words once (kernels/triton_layout.py,
                                     `gpu_kind`) and runs a kernels.triton_ops.TritonPlan.
    "cpu-int4pack" / "cpu-int8pack"  PyTorch's native CPU kernels (2/3/4-bit and per-channel 8-bit), and
    "cpu-dequant-bf16"               dequantize to bf16 + one dense matmul from some M on: a QuantLinear on
                                     CPU builds a kernels.cpu_plan.CpuPlan once (layouts in
                                     kernels/cpu_native.py), which picks among them by M on every call.
    "reference"                      pure torch dequantize + matmul, any device.
`qmatmul` serves the canonical layout (Triton or the reference); `native_kind` says which native CPU
layout, if any, a weight can adopt, `gpu_kind` whether a weight on CUDA takes the Triton layout.
FP8 weights take torch._scaled_mm on sm89+ ("cuda-scaled-mm"), and on CPU an FP8Linear runs an exact fp16 copy
(kernels.cpu_native.fp8_fp16_mm: "cpu-fp8-fp16", "cpu-fp8-fp32"); W8A8 torch._int_mm ("cuda-int-mm");
`semi_structured_supported` says whether a 2:4 weight can take PyTorch's semi-structured kernel.
"""

from __future__ import annotations

import importlib.util

import torch

from kernels import cpu_native
from kernels.reference import (
    check_qweight,
    fp8_matmul_ref,
    int8_dynamic_matmul_ref,
    qmatmul_ref,
    quantize_per_token_int8,
)

REFERENCE = "reference"
TRITON = "triton"
HAS_TRITON = importlib.util.find_spec("triton") is not None  # Linux x86_64 only (requirements.txt)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def native_kind(device: torch.device, *, bits: int, group_size: int, in_features: int,
                out_features: int) -> str | None:
    """The native runtime layout a module on `device` should adopt for this weight, or None to stay canonical."""
    if device.type != "cpu":
        return None
    return cpu_native.native_kind(bits, group_size, in_features, out_features)


def gpu_kind(device: torch.device, *, bits: int, group_size: int, in_features: int) -> str | None:
    """"triton" when a weight on `device` takes the Triton kernels (CUDA, Triton installed, a group the
    kernels tile: kernels.triton_layout.unsupported_reason), else None (the reference)."""
    if device.type != "cuda" or not HAS_TRITON:
        return None
    from kernels.triton_layout import unsupported_reason

    return TRITON if unsupported_reason(bits, group_size, in_features) is None else None


def qmatmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
            group_size: int, in_features: int, perm: torch.Tensor | None = None,
            bias: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """y [..., N] = x[..., perm] @ W.T + bias for a canonical packed weight (kernels.pack); returns (y, path).

    On CUDA this builds the GPU words for the call (a view for 2/4/8 bits, a repack for 3) and transposes
    the scales: fine for one-off calls; a QuantLinear builds them once.
    """
    if x.is_cuda and x.dtype in TRITON_DTYPES and gpu_kind(x.device, bits=bits, group_size=group_size,
                                                           in_features=in_features):
        from kernels.triton_ops import qmatmul_triton, triton_path

        if x.shape[-1] != in_features:
            raise ValueError(f"x has {x.shape[-1]} features in its last dim, the layer expects in_features={in_features}")
        check_qweight(qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features, perm=perm)
        y = qmatmul_triton(x, qweight, scales, zeros, perm, bias, bits, group_size, in_features)
        n = qweight.shape[1] if qweight.dtype == torch.int32 else qweight.shape[0]
        return y, triton_path(x.numel() // in_features, n, in_features)
    y = qmatmul_ref(x, qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features,
                    perm=perm, bias=bias)
    return y, REFERENCE


def int8_dynamic_matmul(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, *,
                        bias: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """W8A8 with per-token dynamic activation quantization; returns (y, path).

    torch._int_mm (int8 x int8 -> int32) runs on CPU for any M; on CUDA it needs M > 16 and K, N
    multiples of 8, so small decode batches there take the reference.
    """
    k = x.shape[-1]
    m = x.numel() // max(k, 1)
    n = weight.shape[0]
    on_cuda = x.is_cuda
    if x.device.type == "cpu" or (on_cuda and m > 16 and k % 8 == 0 and n % 8 == 0):
        lead = x.shape[:-1]
        xq, x_scale = quantize_per_token_int8(x.reshape(m, k))  # (M, K), (M, 1)
        # int32 * fp32 promotes in the multiply itself: (acc * x_scale) * w_scale, the reference's order
        y = torch.mul(torch._int_mm(xq, weight.T), x_scale).mul_(weight_scale.float())  # (M, N) fp32
        y = y.to(x.dtype).view(*lead, n)
        y = y if bias is None else y + bias.to(y.dtype)
        return y, "cuda-int-mm" if on_cuda else "cpu-int-mm"
    return int8_dynamic_matmul_ref(x, weight, weight_scale, bias), REFERENCE


def _fp8_mm_kind(device: torch.device) -> str | None:
    """"rowwise" (sm90+: per-token x scales and per-channel weight scales inside _scaled_mm), "tensorwise"
    (sm89: one x scale in the call, the weight's per-channel scales applied after), or None."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return None
    cap = torch.cuda.get_device_capability(device)
    return "rowwise" if cap >= (9, 0) else "tensorwise" if cap >= (8, 9) else None


def fp8_matmul(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, *,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """FP8 weight [N, K] matmul; returns (y, path).

    On CUDA with FP8 tensor cores (sm89+) activations are quantized to e4m3 (per token on sm90+, per tensor
    on sm89, whose _scaled_mm takes no row-wise scales) and torch._scaled_mm runs ("cuda-scaled-mm", K and N
    multiples of 16); elsewhere the weight is dequantized and multiplied in x's dtype ("reference",
    weight-only, so its numerics differ by the activation rounding).
    """
    k = x.shape[-1]
    n = weight.shape[0]
    kind = _fp8_mm_kind(x.device) if k % 16 == 0 and n % 16 == 0 else None
    if kind is None or x.numel() == 0:
        return fp8_matmul_ref(x, weight, weight_scale, bias), REFERENCE
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).float()  # (M, K)
    if kind == "rowwise":
        x_scale = x2.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 448.0  # (M, 1)
        xq = (x2 / x_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, weight.T, scale_a=x_scale, scale_b=weight_scale.float().reshape(1, n),
                             out_dtype=torch.bfloat16)  # (M, N)
    else:
        x_scale = x2.abs().amax().clamp(min=1e-12) / 448.0  # ()
        xq = (x2 / x_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        one = torch.ones((), device=x.device, dtype=torch.float32)
        y = torch._scaled_mm(xq, weight.T, scale_a=x_scale, scale_b=one, out_dtype=torch.float32)
        y = y * weight_scale.float().reshape(1, n)  # (M, N)
    y = y.to(x.dtype).reshape(*lead, n)
    return (y if bias is None else y + bias.to(y.dtype)), "cuda-scaled-mm"


def semi_structured_supported(device: torch.device, shape: tuple[int, int], dtype: torch.dtype) -> bool:
    """Whether a 2:4-pruned weight [N, K] on `device` can become a SparseSemiStructuredTensor ("cuda-semi-structured"):
    CUDA Ampere or newer, and the shape and dtype that torch's own CUTLASS table allows (fp16/bf16: rows a
    multiple of 32, columns of 64). to_sparse_semi_structured raises on anything else; call this first."""
    if device.type != "cuda" or not torch.cuda.is_available() or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    try:
        from torch.sparse import SparseSemiStructuredTensorCUTLASS as cutlass
    except ImportError:
        return False
    limits = cutlass._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    n, k = shape
    return limits is not None and n >= limits.sparse_min_rows and n % limits.sparse_min_rows == 0 \
        and k >= limits.sparse_min_cols and k % limits.sparse_min_cols == 0
