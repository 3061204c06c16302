"""Magnitude pruning: zero the smallest |W| (the classic baseline, calibration-free).

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks"
(NeurIPS 2015), https://arxiv.org/abs/1506.02626 . As in the Wanda and SparseGPT papers' baseline,
unstructured magnitude pruning compares weights over the whole matrix (layer-wise).
"""

from __future__ import annotations

import torch

from compressor.sparsity import nm_mask, unstructured_mask


@torch.no_grad()
def magnitude_mask(W: torch.Tensor, sparsity: float = 0.5, *, prune_n: int = 0, prune_m: int = 0) -> torch.Tensor:
    """Mask (True = prune) of W [N, K]: the lowest `sparsity` of |W| per matrix, or N:M when prune_n > 0."""
    W_metric = W.detach().float().abs()
    if prune_n:
        return nm_mask(W_metric, prune_n, prune_m)
    return unstructured_mask(W_metric, sparsity, per_row=False)
