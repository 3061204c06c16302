"""A QuantLinear's CPU runtime, built once at its first forward: x [..., K] -> (y [..., N], kernel path).

Everything a call needs (native layout, bf16 scales, int64 permutation, the M at which to switch
kernels) is computed when the plan is built, so a decode step pays one bf16 cast of x, the kernel and
one cast back (measured: `python -m kernels.bench --overhead`).

Which path, by layout and by the number of rows M = x.numel() // K:
    int4pack (2/3/4-bit)   M <  DENSE_FROM["cpu-int4pack"]  cpu-int4pack
                           M >= that                         cpu-dequant-bf16
    int8pack (8-bit, G=K)  M <  DENSE_FROM["cpu-int8pack"]  cpu-int8pack
                           M >= that                         cpu-dequant-bf16
    anything else          any M                             reference (dequantize in fp32, fp32 matmul)
The reference keeps fp32 math at every M: those layers include grouped 8-bit weights, whose quantization
noise is as small as a bf16 rounding of the weight (-50 dB), so a bf16 dense path would double it.
"""

from __future__ import annotations

import torch

from kernels import cpu_native
from kernels.cpu_native import DEQUANT_BF16, INT4PACK, INT8PACK, NativeWeight
from kernels.reference import qmatmul_ref

REFERENCE = "reference"
# First M at which dequantizing the whole weight to bf16 and running one dense bf16 matmul beats the
# native kernel, measured on this project's 2-core AVX-512 machine (`python -m kernels.bench --crossover`):
# the dequantization costs about as much as 30-60 rows of the kernel, and the dense bf16 matmul runs
# 2-2.5x faster per row than the kernels from M = 16 on.
DENSE_FROM = {INT4PACK: 48, INT8PACK: 48, REFERENCE: 1 << 62}


class CpuPlan:
    """Callable x [..., K] -> (y [..., N] in x's dtype, path); tensors are shared with the module, not copied."""

    def __init__(self, kind: str | None, weight: torch.Tensor, nw: NativeWeight | None, *, in_features: int,
                 out_features: int, bits: int, group_size: int, scales: torch.Tensor, zeros: torch.Tensor,
                 perm_index: torch.Tensor | None, bias: torch.Tensor | None):
        self.kind = kind or REFERENCE
        self.weight, self.nw = weight, nw  # native layout, or the canonical qweight for the reference
        self.k, self.n = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.scales, self.zeros = scales, zeros
        self.perm, self.bias = perm_index, bias
        self.dense_from = DENSE_FROM[self.kind]
        if kind == INT4PACK:
            self._op = torch.ops.aten._weight_int4pack_mm_for_cpu.default
            if out_features % 64:  # no block-wise dequantization for this row split: the kernel at every M
                self.dense_from = 1 << 62

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.k)  # (M, K)
        m = x2.shape[0]
        if m == 0:
            y = x.new_zeros(*lead, self.n)
            return (y if self.bias is None else y + self.bias.to(y.dtype)), self.kind
        if self.perm is not None:
            x2 = x2.index_select(1, self.perm)
        if m >= self.dense_from:
            y, path = torch.nn.functional.linear(x2.to(torch.bfloat16), self.dense_weight()), DEQUANT_BF16
        elif self.kind == INT4PACK:
            xb = x2.to(torch.bfloat16, memory_format=torch.contiguous_format)
            y, path = self._op(xb, self.weight, self.nw.group_size, self.nw.scale), INT4PACK
        elif self.kind == INT8PACK:
            y, path = cpu_native.int8pack_mm(x2, self.weight, self.nw), INT8PACK
        else:
            y, path = qmatmul_ref(x2, self.weight, self.scales, self.zeros, bits=self.bits,
                                  group_size=self.group_size, in_features=self.k), REFERENCE
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*lead, self.n), path

    def dense_weight(self) -> torch.Tensor:
        """W bf16 [N, K] of a native layout (a transposed view for int4pack), dequantized now and not kept."""
        if self.kind == INT4PACK:
            return cpu_native.int4pack_dequant_t(self.weight, self.nw, self.k).T
        return cpu_native.int8pack_dequant(self.weight, self.nw)
