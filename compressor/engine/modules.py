"""The engine's own module types, which stages put in place of an nn.Linear: LowRankLinear (a factored
layer, two nn.Linear) and Sparse24Linear (a 2:4-sparse weight stored compactly) with its packer.
Kernel-backed packed modules (QuantLinear, Int8DynamicLinear, FP8Linear) are kernels.modules'; all of
them are registered for saving and reports in compressor/engine/packed.py.

Conventions (as in locuslab/wanda `lib/prune.py`): `prune_n:prune_m` means "zero prune_n of every
prune_m consecutive input weights of an output row", so 2:4 keeps 2 of 4 (NVIDIA's 2:4 sparse format).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LowRankLinear(nn.Module):
    """y = up(down(x)): a rank-r factored linear, down [r, K] (no bias) then up [N, r] (+ bias [N]).

    Both factors are ordinary nn.Linear modules, so later stages (quantization, distillation) see
    and treat them like any other linear.
    """

    def __init__(self, up: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        r, K = down.shape
        N = up.shape[0]
        self.in_features, self.out_features, self.rank = K, N, r
        self.down = nn.Linear(K, r, bias=False, dtype=down.dtype, device=down.device)
        self.up = nn.Linear(r, N, bias=bias is not None, dtype=up.dtype, device=up.device)
        self.down.weight.data.copy_(down)
        self.up.weight.data.copy_(up)
        if bias is not None:
            self.up.bias.data.copy_(bias)

    @classmethod
    def empty(cls, in_features: int, out_features: int, rank: int, bias: bool = False,
              dtype: torch.dtype = torch.float32, device: str | torch.device = "meta") -> LowRankLinear:
        """Allocate a module from its metadata (no memory on "meta"); fill it with
        `load_state_dict(assign=True)`, which also gives each factor its saved dtype."""
        up = torch.empty(out_features, rank, dtype=dtype, device=device)
        down = torch.empty(rank, in_features, dtype=dtype, device=device)
        return cls(up, down, torch.empty(out_features, dtype=dtype, device=device) if bias else None)

    def metadata(self) -> dict:
        """The integers `empty` needs to rebuild this module before `load_state_dict`."""
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "bias": self.up.bias is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., r] -> [..., N]
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def satisfies_nm(W: torch.Tensor, prune_n: int, prune_m: int) -> bool:
    """True when every group of prune_m consecutive weights in a row has at least prune_n zeros."""
    N, K = W.shape
    zeros = (W.reshape(N, K // prune_m, prune_m) == 0).sum(dim=2)  # (N, K/M)
    return bool((zeros >= prune_n).all())


def pack_24(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Store a 2:4-sparse W [N, K] compactly as kept values [N, K/2] and indices uint8 [N, K/8].

    In each group of 4 columns the (at most) two nonzeros are kept with their in-group column
    indices i0 < i1 (2 bits each). Layout of one index byte (two groups, g even):

        bit  7 6 | 5 4 | 3 2 | 1 0
             i1   i0    i1    i0
             group g+1  group g

    Groups with fewer than two nonzeros keep zeros in the free slots, so unpacking is exact.
    """
    N, K = W.shape
    if K % 8:
        raise ValueError(f"compact 2:4 storage needs in_features divisible by 8, got {K}")
    if not satisfies_nm(W, 2, 4):
        raise ValueError("W is not 2:4 sparse (some group of 4 has fewer than 2 zeros): prune with 2:4 first")
    groups = W.reshape(N, K // 4, 4)  # (N, K/4, 4)
    # Rank positions nonzero-first (stable, so ties keep column order), take two, restore column order.
    order = torch.sort((groups == 0).to(torch.int8), dim=2, stable=True)[1][..., :2]  # (N, K/4, 2)
    idx = torch.sort(order, dim=2)[0]  # i0 < i1
    values = torch.gather(groups, 2, idx).reshape(N, K // 2)  # (N, K/2)
    nibble = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.uint8)  # (N, K/4)
    nibble = nibble.reshape(N, K // 8, 2)  # (N, K/8, 2): two groups per byte
    meta = nibble[..., 0] | (nibble[..., 1] << 4)
    return values.contiguous(), meta.contiguous()


def unpack_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_24`: dense W [N, K] from values [N, K/2] and indices [N, K/8]."""
    N, half = values.shape
    K = half * 2
    nibble = torch.stack([meta & 0xF, meta >> 4], dim=2).reshape(N, K // 4)  # (N, K/4)
    idx = torch.stack([nibble & 0x3, (nibble >> 2) & 0x3], dim=2).long()  # (N, K/4, 2)
    W = torch.zeros(N, K // 4, 4, dtype=values.dtype, device=values.device)
    W.scatter_(2, idx, values.reshape(N, K // 4, 2))
    return W.reshape(N, K)


def semi_structured_available(device: torch.device | str) -> bool:
    """True where PyTorch's 2:4 semi-structured sparse matmul can run (CUDA, compute capability >= 8.0)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


class Sparse24Linear(nn.Module):
    """A 2:4-sparse linear stored compactly: values [N, K/2] + 2-bit indices uint8 [N, K/8] (+ bias [N]).

    Weight bytes are 53% of dense in fp32 and 56% in fp16 (half the values plus one index byte per
    8 columns). The forward decompresses to dense and runs F.linear ("dense-decompress": fewer bytes
    at rest, no speed-up), or, after `to_semi_structured()` on CUDA Ampere+, uses PyTorch's
    semi-structured sparse kernel ("cuda-semi-structured").
    """

    def __init__(self, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = values.shape[0], values.shape[1] * 2
        self.register_buffer("values", values)
        self.register_buffer("meta", meta)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self._sparse_weight = None  # runtime-only CUDA layout, never in the state dict
        self.kernel_path: str | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Sparse24Linear:
        values, meta = pack_24(linear.weight.detach())
        return cls(values, meta, linear.bias)

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool = False, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "meta") -> Sparse24Linear:
        """Allocate a module from its metadata (no memory on "meta"); fill it with
        `load_state_dict(assign=True)`, which also gives the values their saved dtype."""
        if in_features % 8:
            raise ValueError(f"compact 2:4 storage needs in_features divisible by 8, got {in_features}")
        values = torch.empty(out_features, in_features // 2, dtype=dtype, device=device)
        meta = torch.empty(out_features, in_features // 8, dtype=torch.uint8, device=device)
        return cls(values, meta, torch.empty(out_features, dtype=dtype, device=device) if bias else None)

    def metadata(self) -> dict:
        """The integers `empty` needs to rebuild this module before `load_state_dict`."""
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    def dense_weight(self) -> torch.Tensor:
        return unpack_24(self.values, self.meta)

    def to_semi_structured(self) -> bool:
        """Switch to PyTorch's CUDA 2:4 kernel where it applies; returns whether it did."""
        if not semi_structured_available(self.values.device) or self.values.dtype not in (torch.float16,
                                                                                          torch.bfloat16):
            return False
        from torch.sparse import to_sparse_semi_structured
        self._sparse_weight = to_sparse_semi_structured(self.dense_weight())
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        if self._sparse_weight is not None and x.is_cuda:
            self.kernel_path = "cuda-semi-structured"
            return F.linear(x, self._sparse_weight, self.bias)
        self.kernel_path = "dense-decompress"
        return F.linear(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pattern=2:4 compact"
