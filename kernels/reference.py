"""Pure-torch dequantize and quantized matmul: the CPU fallback and the oracle every kernel is tested against.

Shape contract (docs/architecture.md, "Weight format"):
    qweight: uint8 [N, packed_cols(K, bits)]   kernels.pack layout of q [N, K], q in [0, 2**bits - 1]
    scales, zeros: fp16 [N, K // G]             W[n, k] = (q[n, k] - zeros[n, k // G]) * scales[n, k // G]
    perm: int32 [K] or None                     act-order: y = x[..., perm] @ W.T (W in permuted column order)
    x: [..., K]  ->  y: [..., N]
"""

from __future__ import annotations

import torch

from kernels.pack import SUPPORTED_BITS, packed_cols, unpack


def _divisors(n: int, limit: int = 8) -> list[int]:
    return [d for d in range(8, n + 1) if n % d == 0][:limit]


def check_qweight(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                  group_size: int, in_features: int, perm: torch.Tensor | None = None) -> None:
    """Fail fast on a malformed packed weight, naming the bad value and the fix."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported: choose one of {SUPPORTED_BITS}")
    if group_size <= 0 or in_features % group_size:
        raise ValueError(
            f"group_size={group_size} must divide in_features={in_features}: try one of "
            f"{_divisors(in_features)} or group_size={in_features} (per channel)"
        )
    n = qweight.shape[0]
    if qweight.dtype != torch.uint8 or qweight.shape != (n, packed_cols(in_features, bits)):
        raise ValueError(
            f"qweight is {qweight.dtype} {tuple(qweight.shape)}, expected uint8 "
            f"({n}, {packed_cols(in_features, bits)}) for bits={bits}, in_features={in_features}: pack with kernels.pack.pack"
        )
    expected = (n, in_features // group_size)
    for name, t in (("scales", scales), ("zeros", zeros)):
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {expected} = [N, K // group_size]")
    if perm is not None and tuple(perm.shape) != (in_features,):
        raise ValueError(f"perm has shape {tuple(perm.shape)}, expected ({in_features},): one index per input column")


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int, group_size: int,
               in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W [N, K] = (q - zeros) * scales per group, computed in fp32 and returned in `dtype`.

    With act-order the columns stay in permuted order: multiply with x[..., perm].
    """
    check_qweight(qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features)
    n = qweight.shape[0]
    q = unpack(qweight, bits, in_features).float().reshape(n, in_features // group_size, group_size)  # (N, K/G, G)
    w = (q - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)  # (N, K/G, G)
    return w.reshape(n, in_features).to(dtype)


def qmatmul_ref(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                group_size: int, in_features: int, perm: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [..., N] = x[..., perm] @ W.T + bias, with W dequantized to x's dtype (fp32 math for fp32 x)."""
    if x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} features in its last dim, the layer expects in_features={in_features}")
    check_qweight(qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features, perm=perm)
    if perm is not None:
        x = x[..., perm.long()]
    w = dequantize(qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features, dtype=x.dtype)
    y = x @ w.T
    return y if bias is None else y + bias.to(y.dtype)


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric dynamic per-token int8: x [M, K] -> (xq int8 [M, K], x_scale fp32 [M, 1]), x ~ xq * x_scale."""
    x = x.float()
    # one reduction and in-place steps: the same numbers as |x|.amax() / 127 with half the torch calls
    x_scale = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).clamp_(min=1e-8).div_(127.0)  # (M, 1)
    xq = torch.div(x, x_scale).round_().clamp_(-127, 127).to(torch.int8)
    return xq, x_scale


def int8_dynamic_matmul_ref(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """W8A8: y [..., N] = (q8(x) @ weight.T) * x_scale * weight_scale + bias, integer products summed in fp32."""
    lead = x.shape[:-1]
    xq, x_scale = quantize_per_token_int8(x.reshape(-1, x.shape[-1]))  # (M, K), (M, 1)
    acc = xq.float() @ weight.float().T  # (M, N)
    y = (acc * x_scale * weight_scale.float()).to(x.dtype).reshape(*lead, -1)
    return y if bias is None else y + bias.to(y.dtype)


def fp8_matmul_ref(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """FP8 weight-only: y = x @ (weight * weight_scale[:, None]).T + bias, weight dequantized to x's dtype."""
    w = (weight.float() * weight_scale.float().reshape(-1, 1)).to(x.dtype)  # (N, K)
    y = x @ w.T
    return y if bias is None else y + bias.to(y.dtype)
