"""Structured pruning: remove whole attention heads (whole KV groups) and MLP channels.

The removed rows and columns are cut out of the matrices, so the pruned model is a smaller dense
model, smaller and faster on every device, with no sparse kernel needed.

Importance follows the output-error view of Wanda / FLAP (An et al., "Fluctuation-based Adaptive
Structured Pruning for Large Language Models", AAAI 2024, https://arxiv.org/abs/2312.11983) and
LLM-Pruner (Ma et al., https://arxiv.org/abs/2305.11627): the contribution of input column j of the
output projection is approximated by ||X_j||_2^2 * ||W[:, j]||_2^2; a unit's score sums it over the
unit's columns. For attention the unit is a KV group (one key/value head and the query heads that
share it, so GQA stays consistent); for the MLP it is one intermediate channel (a row of gate/up,
a column of down).

Per-layer head counts: transformers' Llama attention derives the number of heads from the
projection sizes (`view(..., -1, head_dim)`) and only reads `num_key_value_groups` from the module,
which removing whole KV groups keeps unchanged, so `generate()` works with fewer heads per layer.
The per-layer layout is written to `config.pruned_layout` for a loader to rebuild the shapes.
"""

from __future__ import annotations

import torch
from torch import nn


def column_importance(W: torch.Tensor, x_norm_sq: torch.Tensor) -> torch.Tensor:
    """[K]: ||X_j||^2 * ||W[:, j]||^2 for the input columns j of W [N, K]."""
    return x_norm_sq.float() * W.detach().float().pow(2).sum(dim=0)


def kv_group_scores(W_o: torch.Tensor, x_norm_sq: torch.Tensor, n_kv_heads: int, head_dim: int) -> torch.Tensor:
    """[n_kv_heads]: importance of each KV group from o_proj W_o [hidden, n_heads * head_dim].

    Query head h belongs to KV group h // n_rep (transformers' `repeat_kv` order), so a group's
    o_proj columns are one contiguous block of n_rep * head_dim.
    """
    cols = column_importance(W_o, x_norm_sq)  # (n_heads * head_dim,)
    return cols.reshape(n_kv_heads, -1).sum(dim=1)  # (n_kv, n_rep * head_dim)


def channels_to_keep(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the n_keep highest scores, in ascending index order (keeps layouts stable)."""
    if not 1 <= n_keep <= scores.numel():
        raise ValueError(f"n_keep {n_keep} must be in [1, {scores.numel()}]")
    return torch.sort(torch.topk(scores, n_keep).indices).values


def _sliced(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    W = linear.weight.detach()
    b = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        W = W[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        W = W[:, cols]
    out = nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=W.dtype, device=W.device)
    out.weight.data.copy_(W)
    if b is not None:
        out.bias.data.copy_(b)
    return out


@torch.no_grad()
def prune_kv_groups(attn: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the KV groups `keep` of a Llama-style attention module (q/k/v/o_proj), in place."""
    hd = attn.head_dim
    n_rep = attn.num_key_value_groups
    kv_rows = (keep.reshape(-1, 1) * hd + torch.arange(hd)).flatten()  # (n_keep * hd,)
    q_heads = (keep.reshape(-1, 1) * n_rep + torch.arange(n_rep)).flatten()  # (n_keep * n_rep,)
    q_rows = (q_heads.reshape(-1, 1) * hd + torch.arange(hd)).flatten()  # (n_keep * n_rep * hd,)
    attn.q_proj = _sliced(attn.q_proj, rows=q_rows)
    attn.k_proj = _sliced(attn.k_proj, rows=kv_rows)
    attn.v_proj = _sliced(attn.v_proj, rows=kv_rows)
    attn.o_proj = _sliced(attn.o_proj, cols=q_rows)


@torch.no_grad()
def prune_mlp_channels(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the intermediate channels `keep` of a gated MLP (gate/up/down_proj), in place."""
    mlp.gate_proj = _sliced(mlp.gate_proj, rows=keep)
    mlp.up_proj = _sliced(mlp.up_proj, rows=keep)
    mlp.down_proj = _sliced(mlp.down_proj, cols=keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = int(keep.numel())


def n_to_keep(total: int, prune_fraction: float, multiple: int = 1) -> int:
    """Units left after removing `prune_fraction` of `total`, rounded to a multiple, at least one unit."""
    if not 0.0 <= prune_fraction < 1.0:
        raise ValueError(f"prune fraction {prune_fraction} must be in [0, 1)")
    keep = round(total * (1.0 - prune_fraction) / multiple) * multiple
    return max(min(keep, total), multiple if multiple <= total else total)
