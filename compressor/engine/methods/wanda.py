"""Wanda: pruning by weights and activations, no weight update.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language Models"
(ICLR 2024), https://arxiv.org/abs/2306.11695 ; reference code: locuslab/wanda `lib/prune.py`.

The score of weight W_ij is |W_ij| * ||X_j||_2, the norm of its input feature over the calibration
tokens. Unstructured pruning removes the lowest scores within a comparison group: each output row
("output", the paper's choice for LLaMA), the whole matrix ("layer", which the paper's section 5
finds better for image classifiers), or, by default, whichever of the two reconstructs each
decoder layer's output better on the calibration tokens ("auto"). N:M patterns compare within
each group of M, so the comparison group does not apply to them.

Why "auto" is the default: which group suits a model is an empirical property of the model. On the
bundled 7M demo model the per-output group is worse for magnitude and Wanda alike (docs/benchmarks.md,
"Wanda's comparison group"), while the paper finds the opposite on LLaMA. "auto" decides per decoder
layer from calibration data only: both candidate masks are applied in turn, the layer is run on
its calibration inputs, and the mask with the smaller output error ||Y - Y'||^2 is kept. The layer
output sees what one matrix's own error cannot: a row that looks unimportant in its matrix may
feed weights that make it dominant downstream (tests/methods/test_pruning.py builds such a case).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from compressor.engine.hessian import output_sqnr_db
from compressor.engine.registry import register
from compressor.engine.sparsity import SparsityConfig, commit_pruned, nm_mask, unstructured_mask
from compressor.errors import RecipeError

COMPARISONS = ("auto", "output", "layer")


@dataclass
class WandaConfig(SparsityConfig):
    """Wanda pruning (needs calibration data).

    Args:
        sparsity, pattern, storage: see SparsityConfig.
        comparison: unstructured comparison group: "output" (each output row, the paper's choice for
            LLaMA), "layer" (the whole matrix), or "auto" (per decoder layer, the one of the two
            with the smaller calibration output error; costs two extra layer forwards).
    """

    needs_calibration: ClassVar[bool] = True

    comparison: Literal["auto", "output", "layer"] = "auto"

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


def _output_error(layer_ctx) -> float:
    """Squared error of the layer's current outputs to its unmodified outputs on the calibration inputs."""
    out = layer_ctx.forward()
    ref = torch.cat(layer_ctx.reference_outputs)
    return float(((out.float() - ref.float()) ** 2).sum())


@register("wanda", WandaConfig)
@torch.no_grad()
def apply(cfg: WandaConfig, layer_ctx) -> None:
    targets = layer_ctx.targets()
    Hs = layer_ctx.hessians(list(targets))  # also keeps the unmodified outputs as the reference
    t0 = time.perf_counter()
    dense = {name: lin.weight.detach().float().clone() for name, lin in targets.items()}
    # diag(H) = 2/n ||X_j||^2 from the shared accumulator: a constant factor cannot change a ranking.
    norms = {name: torch.diag(Hs[name]).sqrt() for name in targets}
    configs = {name: layer_ctx.override_for(name) for name in targets}

    def pruned(name: str, per_output: bool) -> torch.Tensor:
        c = configs[name]
        n, m = c.nm
        mask = wanda_mask(dense[name], norms[name], c.sparsity, prune_n=n, prune_m=m, per_output=per_output)
        return dense[name].masked_fill(mask, 0)

    # Modules with a fixed group (or an N:M pattern, where the group is the M-block) are settled now.
    result = {name: pruned(name, c.comparison == "output") for name, c in configs.items()
              if c.comparison != "auto" or c.nm[0]}
    used = {name: ("n:m" if c.nm[0] else c.comparison) for name, c in configs.items() if name in result}
    auto = [name for name in targets if name not in result]
    errors: dict[str, float] = {}
    if auto:
        candidates = {}
        for group in ("output", "layer"):
            candidates[group] = {name: pruned(name, group == "output") for name in auto}
            for name, lin in targets.items():  # trial run: weights only, nothing replaced or recorded
                lin.weight.data.copy_({**result, **candidates[group]}[name].to(lin.weight.dtype))
            errors[group] = _output_error(layer_ctx)
        best = min(errors, key=errors.get)
        result.update(candidates[best])
        used.update(dict.fromkeys(auto, best))
    # commit_pruned records `now - t0` as a module's seconds: give each module its share of the layer's time
    per_module = (time.perf_counter() - t0) / max(1, len(targets))
    for name, lin in targets.items():
        extra = {"comparison": used[name]}
        if name in auto:
            extra["auto_output_error"] = {k: round(v, 6) for k, v in errors.items()}
        commit_pruned(layer_ctx, name, lin, result[name], configs[name], time.perf_counter() - per_module,
                      output_sqnr_db=output_sqnr_db(dense[name], result[name], Hs[name]), **extra)
