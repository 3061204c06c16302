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
The per-layer layout is written to `config.pruned_layout`; `resize_to_layout` (compressor/engine/layout.py)
rebuilds those shapes in the empty skeleton that `compressor.engine.serialize.load_compressed` builds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compressor.engine.layout import LAYOUT_KEYS, pruned_layout, resize_to_layout  # noqa: F401  (resize re-exported)
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError


@dataclass
class StructuredConfig(StageConfig):
    """Structured pruning of attention KV groups and MLP channels (needs calibration data).

    Args:
        heads_fraction: fraction of KV groups (a key/value head with its query heads) removed per layer;
            at least one group always stays.
        mlp_fraction: fraction of MLP intermediate channels removed per layer.
        channel_multiple: kept MLP channels are rounded to a multiple of this (64 keeps shapes
            friendly to group-wise quantization and GEMM tiles).
        targets, ignore, overrides: a layer's heads are pruned when its o_proj is targeted, its MLP
            when its down_proj is; overrides on those names set per-layer fractions.
    """

    kind: ClassVar[str] = "prune"
    needs_calibration: ClassVar[bool] = True

    heads_fraction: float = 0.25
    mlp_fraction: float = 0.25
    channel_multiple: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("heads_fraction", "mlp_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise RecipeError(name, v, "use a fraction in [0, 1), e.g. 0.25", self.method)
        if isinstance(self.channel_multiple, bool) or not isinstance(self.channel_multiple, int) or \
                self.channel_multiple < 1:
            raise RecipeError("channel_multiple", self.channel_multiple, "use a positive integer, e.g. 64",
                              self.method)


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
def kv_group_slices(attn: nn.Module, keep: torch.Tensor) -> dict[str, nn.Linear]:
    """Smaller q/k/v/o_proj of a Llama-style attention module keeping only the KV groups `keep`."""
    hd = attn.head_dim
    n_rep = attn.num_key_value_groups
    dev = keep.device
    kv_rows = (keep.reshape(-1, 1) * hd + torch.arange(hd, device=dev)).flatten()  # (n_keep * hd,)
    q_heads = (keep.reshape(-1, 1) * n_rep + torch.arange(n_rep, device=dev)).flatten()  # (n_keep * n_rep,)
    q_rows = (q_heads.reshape(-1, 1) * hd + torch.arange(hd, device=dev)).flatten()  # (n_keep * n_rep * hd,)
    return {"q_proj": _sliced(attn.q_proj, rows=q_rows), "k_proj": _sliced(attn.k_proj, rows=kv_rows),
            "v_proj": _sliced(attn.v_proj, rows=kv_rows), "o_proj": _sliced(attn.o_proj, cols=q_rows)}


@torch.no_grad()
def mlp_channel_slices(mlp: nn.Module, keep: torch.Tensor) -> dict[str, nn.Linear]:
    """Smaller gate/up/down_proj of a gated MLP keeping only the intermediate channels `keep`."""
    return {"gate_proj": _sliced(mlp.gate_proj, rows=keep), "up_proj": _sliced(mlp.up_proj, rows=keep),
            "down_proj": _sliced(mlp.down_proj, cols=keep)}


def prune_kv_groups(attn: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the KV groups `keep` of an attention module, in place."""
    for child, lin in kv_group_slices(attn, keep).items():
        setattr(attn, child, lin)


def prune_mlp_channels(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the intermediate channels `keep` of a gated MLP, in place."""
    for child, lin in mlp_channel_slices(mlp, keep).items():
        setattr(mlp, child, lin)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = int(keep.numel())


def n_to_keep(total: int, prune_fraction: float, multiple: int = 1) -> int:
    """Units left after removing `prune_fraction` of `total`, rounded half up to a multiple, at least one unit.

    When `multiple` is too coarse for `total` (rounding would keep everything or nothing) the count is
    rounded to single units instead; callers compare the result with what was asked and say so.
    """
    if not 0.0 <= prune_fraction < 1.0:
        raise ValueError(f"prune fraction {prune_fraction} must be in [0, 1)")
    if multiple < 1:
        raise ValueError(f"multiple {multiple} must be >= 1")
    wanted = total * (1.0 - prune_fraction)
    keep = math.floor(wanted / multiple + 0.5) * multiple
    if prune_fraction > 0 and (keep >= total or keep == 0):
        keep = math.floor(wanted + 0.5)
    return max(1, min(keep, total))


ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")


def _check_layout(layer_ctx, module: nn.Module | None, children: tuple[str, ...], where: str,
                  fused: tuple[str, ...]) -> None:
    """RecipeError unless `module` has every projection in `children` as a plain nn.Linear.

    Structured pruning slices all of them together; a fused projection (Phi-3's qkv_proj /
    gate_up_proj) or one an earlier stage replaced (low-rank, quantized) cannot be sliced.
    """
    if module is None:
        return
    stage = f"stage structured, layer {layer_ctx.index}"
    have_fused = [f for f in fused if hasattr(module, f)]
    if have_fused:
        raise RecipeError("method", "structured", f"{where} fuses its projections ({have_fused[0]}): structured "
                          f"pruning needs separate {', '.join(children)} (the Llama / Mistral / Qwen2 layout); use "
                          "unstructured or N:M pruning for this model", stage)
    for child in children:
        lin = getattr(module, child, None)
        if type(lin) is not nn.Linear:
            found = "missing" if lin is None else f"a {type(lin).__name__}"
            raise RecipeError("method", "structured", f"{layer_ctx.prefix}.{where}.{child} is {found}: structured "
                              "pruning slices plain nn.Linear projections; put the structured stage before "
                              "stages that replace them (low-rank, quantization)", stage)


def _say_if_off(layer_ctx, field: str, fraction: float, before: int, kept: int, unit: str) -> None:
    """A report warning when rounding made the removed share differ from the asked one by over 10 points."""
    removed = (before - kept) / before
    if abs(removed - fraction) > 0.10:
        layer_ctx.warn(f"layer {layer_ctx.index}: {field} {fraction} removed {before - kept} of {before} {unit} "
                       f"({removed:.0%}): whole units cannot match the fraction at this size")


@register("structured", StructuredConfig)
def apply(cfg: StructuredConfig, layer_ctx) -> None:
    layer, p = layer_ctx.layer, layer_ctx.prefix
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    o_name, down_name = f"{p}.self_attn.o_proj", f"{p}.mlp.down_proj"
    c_attn = layer_ctx.override_for(o_name) if attn is not None and hasattr(attn, "o_proj") else None
    c_mlp = layer_ctx.override_for(down_name) if mlp is not None and hasattr(mlp, "down_proj") else None
    if c_attn is not None and c_attn.heads_fraction == 0:
        c_attn = None
    if c_mlp is not None and c_mlp.mlp_fraction == 0:
        c_mlp = None
    names = [n for n, c in ((o_name, c_attn), (down_name, c_mlp)) if c is not None]
    if not names:
        return
    _check_layout(layer_ctx, attn if c_attn is not None else None, ATTN_PROJ, "self_attn", ("qkv_proj",))
    _check_layout(layer_ctx, mlp if c_mlp is not None else None, MLP_PROJ, "mlp", ("gate_up_proj",))
    t0 = time.perf_counter()
    # ||X_j||^2 up to a shared factor: diag of the shared Hessian (2/n X^T X).
    x_sq = {n: torch.diag(H) for n, H in layer_ctx.hessians(names).items()}
    config = getattr(attn if attn is not None else mlp, "config", None)
    layout = pruned_layout(config, layer_ctx.n_layers) if config is not None else None

    if c_attn is not None:
        n_kv = attn.k_proj.out_features // attn.head_dim
        scores = kv_group_scores(attn.o_proj.weight, x_sq[o_name], n_kv, attn.head_dim)
        keep = channels_to_keep(scores, n_to_keep(n_kv, c_attn.heads_fraction))
        _say_if_off(layer_ctx, "heads_fraction", c_attn.heads_fraction, n_kv, int(keep.numel()), "KV groups")
        for child, lin in kv_group_slices(attn, keep).items():
            layer_ctx.replace(f"{p}.self_attn.{child}", lin)
        n_heads = int(keep.numel()) * attn.num_key_value_groups
        layer_ctx.record(o_name, kv_groups_kept=int(keep.numel()), kv_groups_before=n_kv, heads_kept=n_heads,
                         kept_groups=keep.tolist(), seconds=time.perf_counter() - t0,
                         savings="smaller dense matrices: fewer bytes and FLOPs on every device")
        if layout is not None:
            layout["num_attention_heads"][layer_ctx.index] = n_heads
            layout["num_key_value_heads"][layer_ctx.index] = int(keep.numel())

    if c_mlp is not None:
        n_ch = mlp.down_proj.in_features
        scores = column_importance(mlp.down_proj.weight, x_sq[down_name])
        keep = channels_to_keep(scores, n_to_keep(n_ch, c_mlp.mlp_fraction, c_mlp.channel_multiple))
        _say_if_off(layer_ctx, "mlp_fraction", c_mlp.mlp_fraction, n_ch, int(keep.numel()), "MLP channels")
        for child, lin in mlp_channel_slices(mlp, keep).items():
            layer_ctx.replace(f"{p}.mlp.{child}", lin)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(keep.numel())
        layer_ctx.record(down_name, channels_kept=int(keep.numel()), channels_before=n_ch,
                         seconds=time.perf_counter() - t0,
                         savings="smaller dense matrices: fewer bytes and FLOPs on every device")
        if layout is not None:
            layout["intermediate_size"][layer_ctx.index] = int(keep.numel())
