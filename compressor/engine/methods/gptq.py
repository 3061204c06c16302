"""GPTQ: post-training quantization with second-order (Hessian) error compensation.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023, https://arxiv.org/abs/2210.17323 ; reference code:
IST-DASLab/gptq `gptq.py` (`fasterquant`), whose names this file keeps: W (weights being updated),
H (2/n X^T X from compressor/engine/hessian.py), Hinv (upper Cholesky factor of H^-1), Q (quantized weights),
Err (scaled errors of a block), percdamp (damping as a fraction of mean diag(H)).

Columns are quantized one at a time; each column's error, divided by its Hinv diagonal, is spread
over the columns not yet quantized. Updates are lazy: applied inside a block of `block_size` columns
at once, and to the rest of the matrix once per block.

Act-order (columns in order of decreasing diag(H)) keeps group scales consistent in one of two ways:
  - "static": scales and zeros of every group are computed up front from the original contiguous
    groups; Q is stored in the original column order (no runtime permutation).
  - "group": groups are contiguous in the permuted order, found as GPTQ reaches them; q, scales and
    zeros are stored in permuted order with `perm` (exllama-style, docs/architecture.md), and the
    forward gathers x[..., perm].
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from compressor.engine.hessian import inverse_cholesky, output_sqnr_db
from compressor.engine.quant import STORE_DTYPE, pack_linear, qparams
from compressor.engine.registry import register
from compressor.engine.stage import QuantStageConfig
from compressor.errors import RecipeError

ACTORDER = ("none", "static", "group")


@dataclass
class GPTQConfig(QuantStageConfig):
    """GPTQ weight quantization (needs calibration data).

    Args:
        bits: 2, 3, 4 or 8.
        group_size: columns per scale/zero; -1 = per output channel.
        symmetric: zero fixed at 2**(bits-1) instead of a per-group zero point.
        block_size: columns per lazy-update block (128 in the paper).
        percdamp: damping added to diag(H), as a fraction of its mean (0.01 in the paper).
        actorder: "none", "static" (act-order, groups fixed up front, no runtime permutation) or
            "group" (act-order, groups in permuted order, stored with a permutation).
        targets, ignore, overrides: module selection (see compressor/engine/recipe.py).
    """

    needs_calibration: ClassVar[bool] = True

    block_size: int = 128
    percdamp: float = 0.01
    actorder: Literal["none", "static", "group"] = "static"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise RecipeError("block_size", self.block_size, "use a positive number of columns, e.g. 128", self.method)
        if isinstance(self.percdamp, bool) or not isinstance(self.percdamp, (int, float)) or \
                not 0 < self.percdamp <= 1:
            raise RecipeError("percdamp", self.percdamp, "use a fraction in (0, 1], e.g. 0.01", self.method)
        if self.actorder not in ACTORDER:
            raise RecipeError("actorder", self.actorder, f"choose one of {ACTORDER}", self.method)


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor, *, bits: int, group_size: int, symmetric: bool = False,
                  block_size: int = 128, percdamp: float = 0.01, actorder: str = "none"):
    """Quantize W [N, K] given H [K, K] (modified in place).

    Returns (q uint8 [N, K], scales fp16 [N, K//G], zeros fp16 [N, K//G], perm int32 [K] or None,
    W_hat fp32 [N, K]): W_hat is the dequantized weight in the stored column order (permuted when
    perm is not None), group_size is in columns (K for per channel).
    """
    W = W.clone().float()  # (N, K)
    N, K = W.shape
    G = group_size
    maxq = 2**bits - 1
    dead = torch.diag(H) == 0  # inputs that are always zero: any weight works, use 0
    H[dead, dead] = 1
    W[:, dead] = 0

    groups = None
    if actorder == "static":  # scales from the original contiguous groups, before any update; (N,) each
        groups = [tuple(t[:, 0] for t in qparams(W[:, g:g + G], bits, symmetric)) for g in range(0, K, G)]
    perm = None
    if actorder != "none":
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Hinv, _ = inverse_cholesky(H, percdamp)
    group_of = None if groups is None else (perm // G).tolist()  # each column's static group, as Python ints

    Q = torch.zeros_like(W)
    q_int = torch.zeros(N, K, dtype=torch.uint8, device=W.device)
    scales = torch.zeros(N, K // G, device=W.device)
    zeros = torch.zeros(N, K // G, device=W.device)
    # The column loop runs K times per layer, so each step is a few in-place ops on contiguous rows: the
    # block is held transposed (one column of W per row), and q, its dequantized value and the scaled
    # error are written straight into their block buffers. Same operations in the same order as the
    # reference code (quantize_with, then (q - zero) * scale, then (w - q) / d): bit-identical results.
    for i1 in range(0, K, block_size):
        i2 = min(i1 + block_size, K)
        count = i2 - i1
        W1 = W[:, i1:i2].T.contiguous()  # (count, N)
        Q1, Qi1, Err1 = torch.empty_like(W1), torch.empty_like(W1), torch.empty_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            w = W1[i]  # (N,)
            if group_of is not None:
                scale, zero = groups[group_of[col]]
            elif col % G == 0:
                # Parameters from the group's current (already updated) columns.
                cols = torch.cat([W1[i:].T, W[:, i2:]], dim=1)[:, :G]  # (N, G)
                scale, zero = (t[:, 0] for t in qparams(cols, bits, symmetric))
                scales[:, col // G], zeros[:, col // G] = scale, zero
            qi, q, err = Qi1[i], Q1[i], Err1[i]
            torch.div(w, scale, out=qi).round_().add_(zero).clamp_(0, maxq)
            torch.sub(qi, zero, out=q).mul_(scale)
            torch.sub(w, q, out=err).div_(Hinv1[i, i])
            W1[i:].sub_(torch.outer(Hinv1[i, i:], err))  # spread the error over the block's later columns
        Q[:, i1:i2] = Q1.T
        q_int[:, i1:i2] = Qi1.T.to(torch.uint8)
        W[:, i2:] -= Err1.T.matmul(Hinv[i1:i2, i2:])  # and over the columns after the block, once

    if actorder == "static":  # back to the original column order; scales come from the static groups
        invperm = torch.argsort(perm)
        Q, q_int = Q[:, invperm], q_int[:, invperm]
        scales = torch.stack([s for s, _ in groups], dim=1)
        zeros = torch.stack([z for _, z in groups], dim=1)
        perm = None
    perm = None if perm is None else perm.to(torch.int32)
    return q_int, scales.to(STORE_DTYPE), zeros.to(STORE_DTYPE), perm, Q


@register("gptq", GPTQConfig)
def apply(cfg: GPTQConfig, layer_ctx) -> None:
    targets = layer_ctx.targets()
    Hs = layer_ctx.hessians(list(targets))
    for j, (name, linear) in enumerate(targets.items()):
        t0 = time.perf_counter()
        c = layer_ctx.override_for(name)
        W = linear.weight.detach()  # (N, K)
        G = c.group_for(W.shape[1])
        H = Hs.pop(name)
        H_orig = H.clone()
        q, scales, zeros, perm, W_hat = gptq_quantize(W, H, bits=c.bits, group_size=G, symmetric=c.symmetric,
                                                      block_size=c.block_size, percdamp=c.percdamp,
                                                      actorder=c.actorder)
        W_ref = W.float() if perm is None else W.float()[:, perm.long()]
        H_ref = H_orig if perm is None else H_orig[perm.long()][:, perm.long()]
        layer_ctx.replace(name, pack_linear(q, scales, zeros, bits=c.bits, group_size=G, bias=linear.bias,
                                            perm=perm))
        layer_ctx.record(name, output_sqnr_db=output_sqnr_db(W_ref, W_hat, H_ref), bits=c.bits, group_size=G,
                         seconds=time.perf_counter() - t0, actorder=c.actorder)
        layer_ctx.progress(j + 1, len(targets), name)
