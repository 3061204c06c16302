"""torch.library custom op around the Triton dequant-matmuls, with a fake so torch.compile traces it.

    compression_lab::qmatmul(x [..., K], qweight, scales, zeros, bits, group_size, in_features) -> y [..., N]
Picks the split-K GEMV for M <= 16 rows and the tiled GEMM above (`triton_path`).
"""

from __future__ import annotations

import torch

from kernels.triton_gemm import qgemm
from kernels.triton_gemv import MAX_M, qgemv


def triton_path(m: int) -> str:
    """Kernel name for M rows: decode batches take the GEMV, prefill the GEMM."""
    return "triton-gemv" if m <= MAX_M else "triton-gemm"


@torch.library.custom_op("compression_lab::qmatmul", mutates_args=())
def qmatmul_triton(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int,
                   group_size: int, in_features: int) -> torch.Tensor:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)  # (M, K)
    launch = qgemv if x2.shape[0] <= MAX_M else qgemm
    y = launch(x2, qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features)
    return y.reshape(*lead, qweight.shape[0])


@qmatmul_triton.register_fake
def _(x, qweight, scales, zeros, bits, group_size, in_features):
    return x.new_empty(*x.shape[:-1], qweight.shape[0])
