"""A QuantLinear's CPU runtime, built once at its first forward: x [..., K] -> y [..., N], and the path taken.

Everything a call needs (native layout, bf16 scales, int64 permutation, the M at which to switch
kernels) is computed when the plan is built, so a decode step pays one bf16 cast of x, the kernel and
one cast back (measured: `python -m kernels.bench --overhead`).

Which path, by layout and by the number of rows M = x.numel() // K (`dense_from`):
    int4pack (2/3/4-bit)   cpu-int4pack below M = 96 (192 for weights over 2M elements), then cpu-dequant-bf16
    int8pack (8-bit, G=K)  cpu-int8pack below M = 48, then cpu-dequant-bf16
    anything else          reference (dequantize in fp32, fp32 matmul) at every M
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
# native kernel, measured on this project's 2-core AVX-512 machine (`python -m kernels.bench --crossover`,
# SmolLM2 and demo shapes, loaded machine): per row the dense bf16 matmul is ~2x faster than either kernel
# from M = 16 on; dequantizing int8 (a cast and a scale) costs ~30-50 rows of the kernel, int4 (nibble
# split, cast, scale and zero) ~90-120. Below these M the kernels win, and always at decode (M = 1).
DENSE_FROM = {INT4PACK: 96, INT8PACK: 48, REFERENCE: 1 << 62}
# int4 weights larger than this dequantize out of cache (4096x4096: ~4 ns a weight, the kernel's cost
# of ~100 rows); there the dense path measured ahead only from M = 256 (crossover at ~200).
LARGE_WEIGHT, DENSE_FROM_LARGE_INT4 = 1 << 21, 192


def dense_from(kind: str, out_features: int, in_features: int) -> int:
    """The first M at which a layer of this kind and shape takes cpu-dequant-bf16 (never: 2**62)."""
    if kind is INT4PACK:
        if out_features % 64:  # no block-wise dequantization for this row split: the kernel at every M
            return 1 << 62
        if out_features * in_features > LARGE_WEIGHT:
            return DENSE_FROM_LARGE_INT4
    return DENSE_FROM[kind]


class CpuPlan:
    """Callable x [..., K] -> y [..., N] in x's dtype, `path` naming the last call's kernel; the tensors are the
    module's (its buffers), not copies, so what the plan holds is what weight_bytes counts."""

    def __init__(self, kind: str | None, weight: torch.Tensor, nw: NativeWeight | None, *, in_features: int,
                 out_features: int, bits: int, group_size: int, scales: torch.Tensor, zeros: torch.Tensor,
                 perm_index: torch.Tensor | None, bias: torch.Tensor | None):
        self.kind = {INT4PACK: INT4PACK, INT8PACK: INT8PACK}.get(kind, REFERENCE)  # interned: compared with `is`
        self.weight, self.nw = weight, nw  # native layout, or the canonical qweight for the reference
        self.k, self.n = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.scales, self.zeros = scales, zeros
        self.perm, self.bias = perm_index, bias
        self.path: str | None = None  # the path the last call took
        self.dense_from = dense_from(self.kind, out_features, in_features)
        if self.kind is INT4PACK:
            self._op = torch.ops.aten._weight_int4pack_mm_for_cpu.default
            self.group, self.sz = nw.group_size, nw.scale

    def __getstate__(self) -> dict:  # torch.save(model) / pickle: an aten op handle does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_op"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.kind = {INT4PACK: INT4PACK, INT8PACK: INT8PACK}.get(self.kind, REFERENCE)  # interned again for `is`
        if self.kind is INT4PACK:
            self._op = torch.ops.aten._weight_int4pack_mm_for_cpu.default

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """y [..., N] in x's dtype; `self.path` names the kernel that ran. Each torch call here costs
        1-2 us on this machine (an nn.Module attribute write 2 us), so the decode path makes four."""
        flat = x.dim() != 2
        x2 = x.reshape(-1, self.k) if flat else x  # (M, K)
        m = x2.shape[0]
        if self.perm is not None:
            x2 = x2.index_select(1, self.perm)
        if m >= self.dense_from or m == 0:
            y = self._dense(x2, m)
        elif self.kind is INT4PACK:
            xb = x2.bfloat16()
            y = self._op(xb if xb.is_contiguous() else xb.contiguous(), self.weight, self.group, self.sz)
            self.path = INT4PACK
        elif self.kind is INT8PACK:
            y = cpu_native.int8pack_mm(x2, self.weight, self.nw)
            self.path = INT8PACK
        else:
            y = qmatmul_ref(x2, self.weight, self.scales, self.zeros, bits=self.bits, group_size=self.group_size,
                            in_features=self.k)
            self.path = REFERENCE
        y = y.float() if x.dtype is torch.float32 else y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.n) if flat else y

    def _dense(self, x2: torch.Tensor, m: int) -> torch.Tensor:
        if m == 0:
            return x2.new_zeros(0, self.n)
        self.path = DEQUANT_BF16
        return torch.nn.functional.linear(x2.bfloat16(), self.dense_weight())

    def dense_weight(self) -> torch.Tensor:
        """W bf16 [N, K] of a native layout (a transposed view for int4pack), dequantized now and not kept."""
        if self.kind is INT4PACK:
            return cpu_native.int4pack_dequant_t(self.weight, self.nw, self.k).T
        return cpu_native.int8pack_dequant(self.weight, self.nw)
