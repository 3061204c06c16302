"""The one Hessian accumulator: H = 2/n * sum_i x_i x_i^T over n calibration tokens, in fp32.

This is the proxy Hessian of the layer-wise objective ||W X - W' X||^2 used by OBS/OBQ, GPTQ,
SparseGPT and friends, accumulated exactly as IST-DASLab's gptq.py `add_batch` does (a running
mean, so batches of any size can be added and the scale does not grow with n). GPTQ and every
other Hessian-based method read it from here (via `LayerContext.hessians`); nobody keeps a copy.
"""

from __future__ import annotations

import torch

# Statistics are always accumulated in this dtype, whatever the model's dtype.
STATS_DTYPE = torch.float32


class HessianAccumulator:
    """Running H [K, K] for a linear layer with `in_features = K`."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.H = torch.zeros(in_features, in_features, dtype=STATS_DTYPE, device=device)
        self.n_tokens = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add inputs x [..., K] (any leading shape: batch, sequence)."""
        x = x.reshape(-1, x.shape[-1]).to(STATS_DTYPE)  # (n, K)
        n = x.shape[0]
        if n == 0:
            return
        self.H *= self.n_tokens / (self.n_tokens + n)
        self.n_tokens += n
        x = x * (2.0 / self.n_tokens) ** 0.5
        self.H.addmm_(x.T, x)


def output_sqnr_db(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """SQNR in dB of the layer outputs X W^T vs X W_hat^T on the calibration inputs, from H alone.

    With H = 2/n X^T X: ||X W^T||^2 = n/2 tr(W H W^T), so the ratio needs no activations.
    W, W_hat [N, K] in the same column order as H [K, K].
    """
    import math

    W = W.to(STATS_DTYPE)
    E = W - W_hat.to(STATS_DTYPE)
    signal = ((W @ H) * W).sum().item()
    noise = ((E @ H) * E).sum().item()
    if noise <= 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


DAMP_GROWTH, DAMP_RETRIES = 10.0, 3


def inverse_cholesky(H: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + damp I)^-1, as GPTQ and SparseGPT use it; returns (Hinv, damp).

    damp starts at percdamp x mean(diag H) and grows 10x (up to 3 times) until H + damp I is positive
    definite. H [K, K] fp32 is not modified.
    """
    from compressor.errors import RecipeError

    K = H.shape[0]
    diag = torch.arange(K, device=H.device)
    damp = percdamp * torch.mean(torch.diag(H)).item()
    for _ in range(DAMP_RETRIES + 1):
        Hd = H.clone()
        Hd[diag, diag] += damp
        L, info = torch.linalg.cholesky_ex(Hd)
        if info.item() == 0:
            Hinv = torch.cholesky_inverse(L)
            return torch.linalg.cholesky(Hinv, upper=True), damp  # rows propagate the error
        damp *= DAMP_GROWTH
    raise RecipeError("percdamp", percdamp, "the Hessian is not positive definite even with 1000x this damping: "
                      "use more or more varied calibration samples")
