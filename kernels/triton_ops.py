"""The Triton path of a QuantLinear on CUDA: one function that picks GEMV or GEMM by M, the torch.library custom
op around it (with a fake, so torch.compile traces it), and the plan a module builds once.

    compression_lab::qmatmul(x [..., K], qweight, scales, zeros?, perm?, bias?, bits, group_size, in_features) -> y [..., N]

(qweight, scales, zeros) are canonical (kernels.pack uint8, fp16 scales and zeros [N, K // G]) or the GPU
layout (words int32 [W, N], sz int32 [K // G, N], None: kernels/triton_layout.py); N = y's last dim. M =
x.numel() // K rows: up to GEMV_MAX_M the
CUDA-core GEMV (triton_gemv.py), above it the tensor-core GEMM (triton_gemm.py), which splits K itself
for small M buckets, and from DENSE_FROM_M the weight dequantized once plus one dense matmul.
"""

from __future__ import annotations

from typing import Optional

import torch

from kernels import triton_layout
from kernels.reference import qmatmul_ref
from kernels.triton_config import gpu_operands
from kernels.triton_gemm import qgemm
from kernels.triton_gemv import qgemv
from kernels.triton_unpack import dequantize_t

GEMV, GEMM, DENSE = "triton-gemv", "triton-gemm", "triton-dequant-dense"
# Rows at or below which the GEMV runs. With one row the GEMV reads each weight once on CUDA cores with no
# padding; from two rows a 16-row tensor-core tile costs about what a second pass of FMAs costs.
# benchmarks/gpu_check.py times both kernels at M = 1..16 on the GPU it runs on ("crossover" rows).
GEMV_MAX_M = 1
# From this many rows the whole weight is dequantized once (kernels/triton_unpack.py) and one dense matmul
# runs: the fused GEMM dequantizes every weight tile again for each of its M blocks, which costs more than one
# pass over W from about this M (an estimate from the GEMM's instruction count, kernels/triton_sass.py:
# gpu_check's "prefill" rows measure it); only for weights up to DENSE_MAX_ELEMENTS (the temporary W.T).
DENSE_FROM_M = 1024
DENSE_MAX_ELEMENTS = 1 << 27
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_path(m: int, n: int = 0, k: int = 0) -> str:
    """Kernel name for M rows of an N x K weight: decode takes the GEMV, batches the GEMM, long prefills dense."""
    if m <= GEMV_MAX_M:
        return GEMV
    return DENSE if m >= DENSE_FROM_M and n * k <= DENSE_MAX_ELEMENTS else GEMM


def qmatmul_2d(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
               perm: torch.Tensor | None, bias: torch.Tensor | None, bits: int, group_size: int,
               in_features: int) -> torch.Tensor:
    """y [M, N] for x2 [M, K] by triton_path: the GEMV, the GEMM (autotune mode from $KERNELS_AUTOTUNE), or
    the weight dequantized once (triton_unpack) and one dense matmul."""
    words, sz = gpu_operands(qweight, scales, zeros, bits=bits, in_features=in_features)
    path = triton_path(x2.shape[0], words.shape[1], in_features)
    if path == DENSE:
        w_t = dequantize_t(words, sz, bits=bits, group_size=group_size, in_features=in_features, dtype=x2.dtype)
        xp = x2 if perm is None else x2.index_select(1, perm.long())
        y = xp @ w_t  # (M, N)
        return y if bias is None else y.add_(bias.to(y.dtype))
    launch = qgemv if path == GEMV else qgemm
    return launch(x2, words, sz, None, bits=bits, group_size=group_size, in_features=in_features, perm=perm,
                  bias=bias)


@torch.library.custom_op("compression_lab::qmatmul", mutates_args=())
def qmatmul_triton(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],  # noqa: UP045
                   perm: Optional[torch.Tensor], bias: Optional[torch.Tensor], bits: int, group_size: int,  # noqa: UP045
                   in_features: int) -> torch.Tensor:
    x2 = x.reshape(-1, in_features)  # (M, K)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    y = qmatmul_2d(x2, qweight, scales, zeros, perm, bias, bits, group_size, in_features)
    return y.reshape(*x.shape[:-1], y.shape[-1])


@qmatmul_triton.register_fake
def _(x, qweight, scales, zeros, perm, bias, bits, group_size, in_features):
    n = qweight.shape[1] if qweight.dtype == torch.int32 else qweight.shape[0]
    return x.new_empty(*x.shape[:-1], n)


class TritonPlan:
    """A QuantLinear's CUDA runtime: x [..., K] -> y [..., N] in x's dtype, `path` naming the last call's kernel.

    Holds the module's own tensors (the GPU words and sz, which its qweight / scales / zeros buffers are or
    view), so what it holds is what weight_bytes counts. Eager calls launch directly (the custom op's
    dispatch costs microseconds a call); under torch.compile the call goes through the custom op, which the
    graph keeps. The kernels read the bias in its own dtype (added in fp32). Activations in other dtypes
    (float64) take the reference on the canonical bytes.
    """

    def __init__(self, words: torch.Tensor, sz: torch.Tensor, perm: torch.Tensor | None, bias: torch.Tensor | None,
                 *, bits: int, group_size: int, in_features: int, out_features: int):
        self.words, self.sz, self.perm, self.bias = words, sz, perm, bias
        self.bits, self.group_size, self.k, self.n = bits, group_size, in_features, out_features
        self.path: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in DTYPES:
            self.path = "reference"
            scales, zeros = triton_layout.scale_views(self.sz)
            canonical = triton_layout.from_gpu_words(self.words, self.bits, self.k)
            return qmatmul_ref(x, canonical, scales, zeros, bits=self.bits, group_size=self.group_size,
                               in_features=self.k, perm=self.perm, bias=self.bias)
        if torch.compiler.is_compiling():
            y = qmatmul_triton(x, self.words, self.sz, None, self.perm, self.bias, self.bits, self.group_size, self.k)
        else:
            x2 = x.reshape(-1, self.k)  # (M, K)
            if x2.stride(1) != 1:
                x2 = x2.contiguous()
            y = qmatmul_2d(x2, self.words, self.sz, None, self.perm, self.bias, self.bits, self.group_size,
                           self.k).view(*x.shape[:-1], self.n)
        self.path = triton_path(x.numel() // self.k if self.k else 0, self.n, self.k)
        return y
