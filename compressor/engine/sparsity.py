"""Pure sparsity helpers shared by the pruning methods: masks, N:M checks, compact 2:4 storage.

Conventions (as in locuslab/wanda `lib/prune.py`): a mask is a bool tensor shaped like the weight
with True where the weight is *pruned*; `prune_n:prune_m` means "zero prune_n of every prune_m
consecutive input weights of an output row", so 2:4 keeps 2 of 4 (NVIDIA's 2:4 sparse format).

Memory is saved only where a storage format realises it. `pack_24` / `Sparse24Linear`
(compressor/engine/modules.py) store a 2:4 matrix as its kept values [N, K/2] plus 2-bit column indices;
on CUDA with compute capability >= 8.0 the forward can use PyTorch's semi-structured sparse matmul,
elsewhere it decompresses (fewer bytes, no speed-up).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from compressor.engine.hessian import output_sqnr_db
from compressor.engine.modules import (  # noqa: F401  (the compact 2:4 format, re-exported beside the masks)
    Sparse24Linear,
    pack_24,
    satisfies_nm,
    semi_structured_available,
    unpack_24,
)
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError

PATTERNS = ("unstructured", "2:4", "4:8")
STORAGES = ("dense", "compact")
_NM = re.compile(r"^(\d+):(\d+)$")


def zero_fraction(W: torch.Tensor) -> float:
    """Fraction of exactly-zero entries of W."""
    return float((W == 0).sum()) / max(1, W.numel())


def check_nm_args(prune_n: int, prune_m: int, in_features: int | None = None) -> None:
    """Fail fast on a bad N:M pattern; names the value and what would work."""
    if prune_m <= 0 or not 0 < prune_n < prune_m:
        raise ValueError(f"N:M pattern {prune_n}:{prune_m} is not valid: need 0 < N < M, e.g. 2:4 or 4:8")
    if in_features is not None and in_features % prune_m:
        raise ValueError(f"N:M group size M={prune_m} must divide in_features {in_features}: try M=4 or 8 "
                         f"when {in_features} is a multiple of them")


def unstructured_mask(W_metric: torch.Tensor, sparsity: float, *, per_row: bool = True) -> torch.Tensor:
    """Prune the `sparsity` fraction of lowest-scoring weights, per output row or over the whole matrix.

    Exactly round(sparsity * count) weights are pruned in each comparison group, so the measured
    sparsity matches the target to within one weight per row.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} must be in [0, 1): e.g. 0.5 for half the weights")
    mask = torch.zeros_like(W_metric, dtype=torch.bool)
    if per_row:
        k = round(W_metric.shape[1] * sparsity)
        idx = torch.sort(W_metric, dim=1, stable=True)[1][:, :k]  # (N, k) lowest per row
        mask.scatter_(1, idx, True)
    else:
        k = round(W_metric.numel() * sparsity)
        idx = torch.sort(W_metric.flatten(), stable=True)[1][:k]
        mask.view(-1)[idx] = True
    return mask


def nm_mask(W_metric: torch.Tensor, prune_n: int, prune_m: int) -> torch.Tensor:
    """Prune the prune_n lowest-scoring weights in every group of prune_m consecutive columns."""
    N, K = W_metric.shape
    check_nm_args(prune_n, prune_m, K)
    groups = W_metric.reshape(N, K // prune_m, prune_m)  # (N, K/M, M)
    idx = torch.topk(groups, prune_n, dim=2, largest=False)[1]  # (N, K/M, prune_n)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return mask.reshape(N, K)


def storage_note(pattern: str, storage: str) -> str:
    """What realises (or would realise) memory and speed savings for a sparsity pattern."""
    if pattern == "2:4" and storage == "compact":
        return ("2:4 stored compactly (values + 2-bit indices): weight bytes shrink; speed-up only with "
                "PyTorch's semi-structured kernel on CUDA compute capability >= 8.0 at large batch")
    if pattern == "2:4":
        return ("zeros stored densely: no memory or speed saving; set storage='compact' for 2:4 compact "
                "storage, or a CUDA Ampere+ GPU for semi-structured sparse matmul")
    if ":" in pattern:
        return (f"zeros stored densely: no memory or speed saving; {pattern} has no kernel in PyTorch "
                "(only 2:4 has, on CUDA Ampere+); a sparse format with per-group indices would be needed")
    return ("zeros stored densely: no memory or speed saving; unstructured sparsity needs a sparse format "
            "(CSR/bitmask) and a sparse kernel, which pay off only at high sparsity (>~70-90%)")


# --- the config and the apply step shared by magnitude, Wanda and SparseGPT -------------------------


@dataclass
class SparsityConfig(StageConfig):
    """Unstructured or semi-structured (N:M) pruning of the targeted linear layers.

    Args:
        sparsity: fraction of weights zeroed with pattern "unstructured" (0.5 = half).
        pattern: "unstructured", or "N:M" (zero N of every M consecutive input weights; "2:4", "4:8",
            any N < M with M dividing in_features).
        storage: "dense" keeps nn.Linear with zeros (stackable with quantization and distillation; no
            memory or speed saving), "compact" stores 2:4 as values + 2-bit indices (fewer bytes; a
            final format: later stages cannot rewrite it).
        targets, ignore, overrides: module selection (see compressor/engine/recipe.py).
    """

    kind: ClassVar[str] = "prune"

    sparsity: float = 0.5
    pattern: str = "unstructured"
    storage: Literal["dense", "compact"] = "dense"

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) or \
                not 0.0 <= self.sparsity < 1.0:
            raise RecipeError("sparsity", self.sparsity, "use a fraction in [0, 1), e.g. 0.5", stage)
        if not isinstance(self.pattern, str) or (self.pattern != "unstructured" and not _NM.match(self.pattern)):
            raise RecipeError("pattern", self.pattern, "use 'unstructured' or 'N:M' such as '2:4' or '4:8'", stage)
        n, m = self.nm
        if self.pattern != "unstructured" and not 0 < n < m:
            raise RecipeError("pattern", self.pattern, "N:M needs 0 < N < M, e.g. '2:4'", stage)
        if self.storage not in STORAGES:
            raise RecipeError("storage", self.storage, f"choose one of {STORAGES}", stage)
        if self.storage == "compact" and self.pattern != "2:4":
            raise RecipeError("storage", self.storage, f"compact storage exists for pattern '2:4' only, not "
                              f"{self.pattern!r}: use storage 'dense' or pattern '2:4'", stage)

    @property
    def nm(self) -> tuple[int, int]:
        """(prune_n, prune_m), (0, 0) for unstructured."""
        match = _NM.match(self.pattern) if isinstance(self.pattern, str) else None
        return (int(match[1]), int(match[2])) if match else (0, 0)

    @property
    def target_sparsity(self) -> float:
        n, m = self.nm
        return n / m if m else self.sparsity

    def label(self) -> str:
        return f"{self.method} " + (self.pattern if self.pattern != "unstructured" else f"{self.sparsity:.0%}")

    def traits(self) -> tuple[set[str], float | None]:
        """2:4 (dense or compact) is the one pattern kernels treat differently (sparse tensor cores). An
        override's `pattern` is its module regex, so the N:M pattern is the stage's own."""
        return ({"sparse-2:4"} if self.pattern == "2:4" else set()), None

    def final_format(self, kind: str | None = None) -> tuple[str, str] | None:
        """Compact storage swaps in Sparse24Linear, which later stages cannot rewrite; dense stays nn.Linear."""
        if self.storage == "compact":
            return "compact 2:4 (storage: compact)", "use storage: dense to stack, or put the compact stage last"
        return None

    def check_module(self, name: str, module: nn.Linear) -> None:
        _, m = self.nm
        k = module.in_features
        if m and k % m:
            raise RecipeError("pattern", self.pattern, f"M={m} must divide in_features {k} of {name}", self.method)
        if self.storage == "compact" and k % 8:
            raise RecipeError("storage", self.storage, f"compact 2:4 needs in_features divisible by 8; {name} has "
                              f"{k}: use storage 'dense'", self.method)


@torch.no_grad()
def commit_pruned(ctx, name: str, linear: nn.Linear, W_pruned: torch.Tensor, cfg: SparsityConfig, t0: float,
                  **metrics) -> None:
    """Write the pruned weight, swap in compact storage if asked, record honest accounting.

    `ctx` is a StageContext or LayerContext (both have replace/record). The module is passed to
    `replace` even when it stays an nn.Linear, so the report measures its bytes (unchanged) and
    weight count.
    """
    linear.weight.data.copy_(W_pruned.to(linear.weight.dtype))
    zeros = int((linear.weight == 0).sum())
    module: nn.Module = linear
    if cfg.storage == "compact":
        module = Sparse24Linear.from_linear(linear)
        if module.to_semi_structured():
            metrics["runtime"] = "cuda-semi-structured"
    ctx.replace(name, module)
    ctx.record(name, sparsity=zeros / linear.weight.numel(), zeroed_params=zeros, pattern=cfg.pattern,
               storage=cfg.storage, savings=storage_note(cfg.pattern, cfg.storage),
               seconds=time.perf_counter() - t0, **metrics)


def apply_with_hessians(layer_ctx, prune: Callable[[torch.Tensor, torch.Tensor, SparsityConfig],
                                                   tuple[torch.Tensor, dict]]) -> None:
    """The calibrated apply of Wanda and SparseGPT: H of every target from the shared accumulator,
    then `prune(W fp32, H, cfg) -> (W_pruned, extra metrics)` per module, committed and recorded."""
    targets = layer_ctx.targets()
    Hs = layer_ctx.hessians(list(targets))
    for name, linear in targets.items():
        c = layer_ctx.override_for(name)
        t0 = time.perf_counter()
        W, H = linear.weight.detach().float(), Hs[name]
        W_pruned, extra = prune(W, H, c)
        commit_pruned(layer_ctx, name, linear, W_pruned, c, t0, output_sqnr_db=output_sqnr_db(W, W_pruned, H),
                      **extra)
