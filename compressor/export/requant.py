"""Re-quantization for formats whose grid differs from the lab's: explicit, and measured by the caller.

Two cases, both starting from what the lab holds (never from the original float weights, which an
exported model no longer has):
  - `integer_zeros`: HQQ-style fractional zeros -> integer zero points (compressed-tensors stores zero
    points as integers). q is kept; per group the zero is floor or ceil of the lab's, and the scale is
    refit by least squares for that zero, whichever of the two gives the smaller squared error.
  - `regrid`: round-to-nearest of the lab's dequantized weight onto another grid (act-order columns
    put back in order, another group size, NF4 -> int4), with the lab's own RTN (compressor.engine.quant).
"""

from __future__ import annotations

import torch

from compressor.engine.quant import STORE_DTYPE, quantize
from compressor.export.source import IntWeight


def integer_zeros(w: IntWeight) -> IntWeight:
    """The same q with integer zero points and least-squares scales: W' = (q - zp) * s' ~ (q - z) * s."""
    n, k = w.q.shape
    G, maxq = w.group_size, 2**w.bits - 1
    qg = w.q.float().reshape(n, k // G, G)  # (N, K/G, G)
    ref = w.stored_dense().reshape(n, k // G, G)
    z = w.zeros.float().unsqueeze(-1)  # (N, K/G, 1)
    best_err, best_zp, best_s = None, None, None
    for zp in (z.floor().clamp(0, maxq), z.ceil().clamp(0, maxq)):
        d = qg - zp  # (N, K/G, G)
        den = d.pow(2).sum(-1, keepdim=True)
        s = torch.where(den > 0, (ref * d).sum(-1, keepdim=True) / den.clamp(min=1e-30), w.scales.float().unsqueeze(-1))
        s = s.to(STORE_DTYPE).float()
        err = (d * s - ref).pow(2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_zp, best_s = err, zp, s
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_zp, best_s = torch.where(better, zp, best_zp), torch.where(better, s, best_s)
    return IntWeight(w.q.clone(), best_s.squeeze(-1).to(STORE_DTYPE), best_zp.squeeze(-1).to(STORE_DTYPE), w.bits,
                     G, w.perm, w.bias)


def regrid(W: torch.Tensor, bits: int, group_size: int, symmetric: bool, bias: torch.Tensor | None = None
           ) -> IntWeight:
    """Round-to-nearest of W [N, K] (the lab's dequantized weight, original column order) onto a new grid."""
    q, scales, zeros = quantize(W.float(), bits, group_size, symmetric)
    return IntWeight(q, scales, zeros, bits, W.shape[1] if group_size == -1 else group_size, None, bias)
