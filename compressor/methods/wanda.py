"""Wanda: pruning by weights and activations, no weight update.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language Models"
(ICLR 2024), https://arxiv.org/abs/2306.11695 ; reference code: locuslab/wanda `lib/prune.py`.

The score of weight W_ij is |W_ij| * ||X_j||_2, the norm of its input feature over the calibration
tokens; weights are compared within each output row (per-output comparison group), or within each
group of M for N:M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressor.errors import RecipeError
from compressor.registry import register
from compressor.sparsity import SparsityConfig, apply_with_hessians, nm_mask, unstructured_mask

COMPARISONS = ("output", "layer")


@dataclass
class WandaConfig(SparsityConfig):
    """Wanda pruning (needs calibration data).

    Args:
        sparsity, pattern, storage: see SparsityConfig.
        comparison: unstructured comparison group, "output" (each output row, the paper's choice for
            LLMs) or "layer" (the whole matrix; the paper's section 5 finds it better for some models).
    """

    comparison: str = "output"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.comparison not in COMPARISONS:
            raise RecipeError("comparison", self.comparison, f"choose one of {COMPARISONS}", self.method)


def wanda_metric(W: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """W_metric [N, K] = |W| * ||X_j||_2 with x_norm [K] the input-feature norms."""
    if x_norm.shape != (W.shape[1],):
        raise ValueError(f"x_norm shape {tuple(x_norm.shape)} does not match in_features {W.shape[1]}")
    return W.detach().float().abs() * x_norm.float().reshape(1, -1)


@torch.no_grad()
def wanda_mask(W: torch.Tensor, x_norm: torch.Tensor, sparsity: float = 0.5, *, prune_n: int = 0,
               prune_m: int = 0, per_output: bool = True) -> torch.Tensor:
    """Mask (True = prune) of W [N, K]: lowest `sparsity` of W_metric per output row (or over the
    matrix with per_output=False), or N:M when prune_n > 0."""
    W_metric = wanda_metric(W, x_norm)
    if prune_n:
        return nm_mask(W_metric, prune_n, prune_m)
    return unstructured_mask(W_metric, sparsity, per_row=per_output)


def _prune(W: torch.Tensor, H: torch.Tensor, c: WandaConfig) -> tuple[torch.Tensor, dict]:
    # diag(H) = 2/n * ||X_j||^2 from the shared accumulator: Wanda's ranking is scale-free per row.
    n, m = c.nm
    mask = wanda_mask(W, torch.diag(H).sqrt(), c.sparsity, prune_n=n, prune_m=m, per_output=c.comparison == "output")
    return W.masked_fill(mask, 0), {}


@register("wanda", WandaConfig, needs_calibration=True, kind="prune")
def apply(layer_ctx, cfg: WandaConfig) -> None:
    apply_with_hessians(layer_ctx, _prune)
