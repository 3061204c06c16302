"""SparseGPT: one-shot pruning with OBS weight reconstruction.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
(ICML 2023), https://arxiv.org/abs/2301.00774 ; reference code: IST-DASLab/sparsegpt `sparsegpt.py`.

Columns are processed left to right in blocks. Within a block the mask is chosen by the OBS
saliency w^2 / [H^-1]_jj^2 (per block of columns for unstructured sparsity, per group of M for N:M),
each pruned weight's error is spread over the not-yet-processed columns through the upper Cholesky
factor of H^-1, exactly as GPTQ does for rounding errors. H = X^T X comes from the shared fp32
accumulator in `compressor.engine.hessian`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from compressor.engine.hessian import inverse_cholesky
from compressor.engine.registry import register
from compressor.engine.sparsity import SparsityConfig, apply_with_hessians, check_nm_args
from compressor.errors import RecipeError


@dataclass
class SparseGPTConfig(SparsityConfig):
    """SparseGPT pruning (needs calibration data).

    Args:
        sparsity, pattern, storage: see SparsityConfig.
        block_size: columns per block (the mask is chosen per block; 128 in the paper).
        percdamp: damping added to diag(H), as a fraction of its mean (0.01 in the paper).
    """

    needs_calibration: ClassVar[bool] = True

    block_size: int = 128
    percdamp: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _, m = self.nm
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1 or \
                (m and self.block_size % m):
            raise RecipeError("block_size", self.block_size, "use a positive number of columns that N:M's M "
                              "divides, e.g. 128", self.method)
        if isinstance(self.percdamp, bool) or not isinstance(self.percdamp, (int, float)) or \
                not 0 < self.percdamp <= 1:
            raise RecipeError("percdamp", self.percdamp, "use a fraction in (0, 1], e.g. 0.01", self.method)


@torch.no_grad()
def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, *, prune_n: int = 0, prune_m: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune W [N, K] given the input Hessian H [K, K]; returns (pruned W in W's dtype, per-row OBS loss [N]).

    prune_n > 0 selects N:M (zero prune_n of every prune_m columns) and ignores `sparsity`.
    """
    N, K = W.shape
    if H.shape != (K, K):
        raise ValueError(f"Hessian shape {tuple(H.shape)} does not match in_features {K}")
    if prune_n:
        check_nm_args(prune_n, prune_m, K)
        if blocksize % prune_m:
            raise ValueError(f"blocksize {blocksize} must be a multiple of prune_m {prune_m}")
    elif not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} must be in [0, 1): e.g. 0.5")
    dtype = W.dtype
    W = W.detach().clone().float()
    H = H.detach().clone().float()
    dead = torch.diag(H) == 0  # inputs that never fired: prune them, they cost nothing
    H[dead, dead] = 1
    W[:, dead] = 0

    Hinv, _ = inverse_cholesky(H, percdamp)  # shared with GPTQ: damping grows if H is singular

    Losses = torch.zeros(N, dtype=torch.float32, device=W.device)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        if prune_n == 0:
            # Adaptive mask selection over the whole block (all rows together), as in the paper.
            tmp = W1**2 / (torch.diag(Hinv1).reshape(1, -1)) ** 2
            k = round(tmp.numel() * sparsity)
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
            mask1.view(-1)[torch.sort(tmp.flatten(), stable=True)[1][:k]] = True
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prune_n != 0 and i % prune_m == 0:
                tmp = W1[:, i:i + prune_m] ** 2 / (torch.diag(Hinv1)[i:i + prune_m].reshape(1, -1)) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W.to(dtype), Losses


def _prune(W: torch.Tensor, H: torch.Tensor, c: SparseGPTConfig) -> tuple[torch.Tensor, dict]:
    n, m = c.nm
    W_pruned, losses = sparsegpt_prune(W, H, c.sparsity, prune_n=n, prune_m=m, blocksize=c.block_size,
                                       percdamp=c.percdamp)
    return W_pruned, {"obs_loss": float(losses.sum())}


@register("sparsegpt", SparseGPTConfig)
def apply(cfg: SparseGPTConfig, layer_ctx) -> None:
    apply_with_hessians(layer_ctx, _prune)
