"""Low-rank factorisation of linear layers: truncated SVD, and activation-aware SVD.

Plain SVD keeps the top singular directions of W (Eckart-Young: the best rank-r approximation in
Frobenius norm). The activation-aware variants keep the directions that matter for the layer's
*output* on real inputs instead:

- SVD-LLM whitening (Wang et al., "SVD-LLM: Truncation-aware Singular Value Decomposition for Large
  Language Model Compression", ICLR 2025, https://arxiv.org/abs/2403.07378): with H = X^T X = L L^T
  (Cholesky), truncating the SVD of W L minimises ||(W - W') X^T||_F, the output error on the
  calibration inputs; W' = U_r S_r V_r^T L^-1.
- ASVD scaling (Yuan et al., "ASVD: Activation-aware Singular Value Decomposition for Compressing
  Large Language Models", https://arxiv.org/abs/2312.05821): scale input channel j by
  s_j = mean|X_j|^alpha, truncate the SVD of W diag(s), fold diag(s)^-1 back into the right factor.

A factored layer is two linears, `down` [r, K] then `up` [N, r]; it saves parameters only when
r * (N + K) < N * K.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from compressor.engine.hessian import output_sqnr_db
from compressor.engine.modules import LowRankLinear
from compressor.engine.quant import sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError

# Relative ridge added to H before the Cholesky factorisation (as GPTQ's percdamp), so that inputs
# that never fired on the calibration tokens do not make L singular.
WHITEN_DAMP = 0.01
# ASVD's published exponent for the activation scaling.
ASVD_ALPHA = 0.5
SCALINGS = ("whiten", "asvd")


@dataclass
class SVDConfig(StageConfig):
    """Truncated-SVD factorisation of the targeted linears into two smaller linears (calibration-free).

    Args:
        rank: keep this many singular values (0 = use `energy`).
        energy: keep the smallest rank holding this fraction of the squared spectrum (used when rank is 0).
        only_if_smaller: leave a layer dense when the factored pair would not have fewer parameters.
        targets, ignore, overrides: module selection; overrides can set a per-module rank or energy.
    """

    kind: ClassVar[str] = "lowrank"

    rank: int = 0
    energy: float = 0.9
    only_if_smaller: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise RecipeError("rank", self.rank, "use a positive rank, or 0 to choose it by energy", self.method)
        if self.rank == 0 and (isinstance(self.energy, bool) or not isinstance(self.energy, (int, float))
                               or not 0 < self.energy <= 1):
            raise RecipeError("energy", self.energy, "use a fraction in (0, 1], e.g. 0.9, or set a rank",
                              self.method)
        if not isinstance(self.only_if_smaller, bool):
            raise RecipeError("only_if_smaller", self.only_if_smaller, "use true or false", self.method)

    def rank_args(self) -> dict:
        return {"rank": self.rank} if self.rank else {"energy": float(self.energy)}

    def check_module(self, name: str, module: nn.Linear) -> None:
        full = min(module.in_features, module.out_features)
        if self.rank > full:
            raise RecipeError("rank", self.rank, f"{name} has at most rank {full} "
                              f"(min of {module.out_features} x {module.in_features}): use a rank <= {full}",
                              self.method)


@dataclass
class ActivationSVDConfig(SVDConfig):
    """Activation-aware SVD (needs calibration data): SVD-LLM whitening or ASVD scaling.

    Args:
        rank, energy, only_if_smaller: as for "svd"; energy is measured on the scaled spectrum.
        scaling: "whiten" (SVD-LLM, W L with H = L L^T; minimises the output error) or "asvd"
            (W diag(mean|X_j|^alpha)).
        alpha: ASVD's exponent (0.5 in the paper).
    """

    needs_calibration: ClassVar[bool] = True

    scaling: Literal["whiten", "asvd"] = "whiten"
    alpha: float = ASVD_ALPHA

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scaling not in SCALINGS:
            raise RecipeError("scaling", self.scaling, f"choose one of {SCALINGS}", self.method)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha <= 2:
            raise RecipeError("alpha", self.alpha, "use an exponent in (0, 2], e.g. 0.5", self.method)


def rank_for_energy(S: torch.Tensor, energy: float) -> int:
    """Smallest r with sum(S[:r]^2) >= energy * sum(S^2), for singular values S (descending)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy {energy} must be in (0, 1]: e.g. 0.9 keeps 90% of the squared spectrum")
    cum = torch.cumsum(S.double() ** 2, 0)
    r = int(torch.searchsorted(cum, energy * cum[-1] * (1 - 1e-12)).item()) + 1
    return min(r, S.numel())


def _split(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Balanced split sqrt(S) on both sides keeps the two factors on the same scale (better for later
    # quantization and for distillation's gradients).
    root = S[:r].sqrt()
    up = U[:, :r] * root.reshape(1, -1)  # (N, r)
    down = root.reshape(-1, 1) * Vh[:r]  # (r, K)
    return up, down


@torch.no_grad()
def truncated_svd(W: torch.Tensor, rank: int | None = None, energy: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W [N, K] ~= up [N, r] @ down [r, K]; returns (up, down, S all singular values) in fp32."""
    U, S, Vh = torch.linalg.svd(W.detach().float(), full_matrices=False)
    r = _pick_rank(S, rank, energy)
    up, down = _split(U, S, Vh, r)
    return up, down, S


def _pick_rank(S: torch.Tensor, rank: int | None, energy: float | None) -> int:
    if (rank is None) == (energy is None):
        raise ValueError(f"give exactly one of rank ({rank}) or energy ({energy})")
    if rank is not None:
        if not 1 <= rank <= S.numel():
            raise ValueError(f"rank {rank} must be in [1, {S.numel()}] = [1, min(out_features, in_features)]")
        return rank
    return rank_for_energy(S, energy)


@torch.no_grad()
def whitened_svd(W: torch.Tensor, H: torch.Tensor, rank: int | None = None, energy: float | None = None,
                 *, damp: float = WHITEN_DAMP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD-LLM: W [N, K] ~= up @ down minimising the output error on inputs with H = X^T X [K, K].

    Returns (up [N, r], down [r, K], S the singular values of the whitened W L).
    """
    K = W.shape[1]
    if H.shape != (K, K):
        raise ValueError(f"Hessian shape {tuple(H.shape)} does not match in_features {K}")
    H = H.double() + damp * torch.diag(H).double().mean().clamp_min(1e-12) * torch.eye(K, dtype=torch.float64,
                                                                                       device=H.device)
    L = torch.linalg.cholesky(H)  # H = L L^T
    U, S, Vh = torch.linalg.svd(W.double() @ L, full_matrices=False)
    r = _pick_rank(S, rank, energy)
    up, down = _split(U, S, Vh, r)
    # down @ L^-1 without forming the inverse: solve X L = down, i.e. L^T X^T = down^T.
    down = torch.linalg.solve_triangular(L.T, down.T, upper=True).T
    return up.float(), down.float(), S.float()


@torch.no_grad()
def asvd(W: torch.Tensor, x_abs_mean: torch.Tensor, rank: int | None = None, energy: float | None = None,
         *, alpha: float = ASVD_ALPHA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ASVD: SVD of W diag(s), s_j = mean|X_j|^alpha, with diag(s)^-1 folded into `down`."""
    s = x_abs_mean.double().clamp_min(1e-6) ** alpha  # (K,)
    U, S, Vh = torch.linalg.svd(W.double() * s.reshape(1, -1), full_matrices=False)
    r = _pick_rank(S, rank, energy)
    up, down = _split(U, S, Vh, r)
    return up.float(), (down / s.reshape(1, -1)).float(), S.float()


def saves_parameters(N: int, K: int, r: int) -> bool:
    return r * (N + K) < N * K


def _commit(ctx, name: str, linear: nn.Linear, up: torch.Tensor, down: torch.Tensor, S: torch.Tensor,
            c: SVDConfig, t0: float, **metrics) -> None:
    """Swap in the factored pair (or keep the layer dense when that would not be smaller); record."""
    N, K = linear.out_features, linear.in_features
    r = down.shape[0]
    energy_kept = float(S[:r].double().pow(2).sum() / S.double().pow(2).sum().clamp_min(1e-30))
    common = {"rank": r, "full_rank": min(N, K), "energy_kept": energy_kept, "params_before": N * K}
    if c.only_if_smaller and not saves_parameters(N, K, r):
        ctx.record(name, kept_dense=True, params_after=N * K, seconds=time.perf_counter() - t0, **common,
                   note=f"rank {r} would need {r * (N + K)} parameters >= {N * K}: left dense")
        return
    W = linear.weight.detach().float()
    mod = LowRankLinear(up.to(linear.weight.dtype), down.to(linear.weight.dtype),
                        linear.bias.detach() if linear.bias is not None else None)
    ctx.replace(name, mod)
    ctx.record(name, params_after=r * (N + K), weight_rel_error=float((W - up @ down).norm() / W.norm()),
               seconds=time.perf_counter() - t0, **common, **metrics)


@register("svd", SVDConfig)
def apply(cfg: SVDConfig, ctx) -> None:
    targets = ctx.targets()
    for i, (name, linear) in enumerate(targets.items()):
        c = ctx.override_for(name)
        t0 = time.perf_counter()
        up, down, S = truncated_svd(linear.weight, **c.rank_args())
        _commit(ctx, name, linear, up, down, S, c, t0, weight_sqnr_db=sqnr_db(linear.weight, up @ down))
        ctx.progress(i + 1, len(targets), name)


@register("svd_llm", ActivationSVDConfig)
def apply_activation_aware(cfg: ActivationSVDConfig, layer_ctx) -> None:
    targets = layer_ctx.targets()
    configs = {name: layer_ctx.override_for(name) for name in targets}  # overrides may set `scaling` per module
    whiten = [n for n, c in configs.items() if c.scaling == "whiten"]
    scaled = [n for n, c in configs.items() if c.scaling != "whiten"]
    Hs = layer_ctx.hessians(whiten) if whiten else {}
    acts = layer_ctx.input_activations(scaled) if scaled else {}
    for name, linear in targets.items():
        c = configs[name]
        t0 = time.perf_counter()
        W = linear.weight.detach().float()
        if c.scaling == "whiten":
            up, down, S = whitened_svd(W, Hs[name], **c.rank_args())
            sq = output_sqnr_db(W, up @ down, Hs[name])
        else:
            X = acts[name]  # (n_tokens, K)
            up, down, S = asvd(W, X.abs().mean(dim=0), **c.rank_args(), alpha=c.alpha)
            sq = sqnr_db(X @ W.T, X @ (up @ down).T)
        _commit(layer_ctx, name, linear, up, down, S, c, t0, output_sqnr_db=sq, scaling=c.scaling)
