"""Magnitude pruning: zero the smallest |W| (the classic baseline, calibration-free).

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks"
(NeurIPS 2015), https://arxiv.org/abs/1506.02626 . As in the Wanda and SparseGPT papers' baseline,
unstructured magnitude pruning compares weights over the whole matrix (layer-wise) by default;
`comparison: output` compares within each output row instead (the Wanda paper's ablation, the
like-for-like baseline for Wanda's per-output group).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from compressor.engine.quant import sqnr_db
from compressor.engine.registry import register
from compressor.engine.sparsity import SparsityConfig, commit_pruned, nm_mask, unstructured_mask
from compressor.errors import RecipeError


@dataclass
class MagnitudeConfig(SparsityConfig):
    """Magnitude pruning (calibration-free).

    Args:
        sparsity, pattern, storage: see SparsityConfig.
        comparison: unstructured comparison group, "layer" (the whole matrix, the classic baseline)
            or "output" (each output row).
    """

    comparison: Literal["layer", "output"] = "layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.comparison not in ("layer", "output"):
            raise RecipeError("comparison", self.comparison, "choose 'layer' or 'output'", self.method)


@torch.no_grad()
def magnitude_mask(W: torch.Tensor, sparsity: float = 0.5, *, prune_n: int = 0, prune_m: int = 0,
                   per_output: bool = False) -> torch.Tensor:
    """Mask (True = prune) of W [N, K]: the lowest `sparsity` of |W| per matrix (per output row with
    per_output=True), or N:M when prune_n > 0."""
    W_metric = W.detach().float().abs()
    if prune_n:
        return nm_mask(W_metric, prune_n, prune_m)
    return unstructured_mask(W_metric, sparsity, per_row=per_output)


@register("magnitude", MagnitudeConfig)
def apply(cfg: MagnitudeConfig, ctx) -> None:
    targets = ctx.targets()
    for i, (name, linear) in enumerate(targets.items()):
        c = ctx.override_for(name)
        t0 = time.perf_counter()
        W = linear.weight.detach().float()
        n, m = c.nm
        W_pruned = W.masked_fill(magnitude_mask(W, c.sparsity, prune_n=n, prune_m=m,
                                                         per_output=c.comparison == "output"), 0)
        commit_pruned(ctx, name, linear, W_pruned, c, t0, weight_sqnr_db=sqnr_db(W, W_pruned))
        ctx.progress(i + 1, len(targets), name)
