"""Low-rank factorisation: Eckart-Young tail, energy rank, activation-aware output error."""

from __future__ import annotations

import pytest
import torch

from compressor.engine.methods.lowrank import (
    LowRankLinear,
    asvd,
    rank_for_energy,
    truncated_svd,
    whitened_svd,
)


def _data(N=96, K=128, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g, dtype=torch.float64).float()
    X = torch.randn(n, K, generator=g) * torch.logspace(-1, 1, K)
    return W, X


@pytest.mark.parametrize("rank", [1, 8, 32, 95])
def test_rank_r_error_equals_spectral_tail(rank):
    W, _ = _data()
    up, down, S = truncated_svd(W, rank=rank)
    assert up.shape == (96, rank) and down.shape == (rank, 128)
    err = torch.linalg.matrix_norm(W - up @ down).item()
    tail = S[rank:].double().pow(2).sum().sqrt().item()
    assert err == pytest.approx(tail, rel=1e-3, abs=1e-4)


def test_energy_picks_smallest_rank():
    S = torch.tensor([3.0, 2.0, 1.0, 1.0])  # squares 9, 4, 1, 1 of 15
    assert rank_for_energy(S, 0.6) == 1
    assert rank_for_energy(S, 0.61) == 2
    assert rank_for_energy(S, 1.0) == 4
    W, _ = _data()
    up, _, S = truncated_svd(W, energy=0.9)
    r = up.shape[1]
    kept = S[:r].pow(2).sum() / S.pow(2).sum()
    assert kept >= 0.9 and S[:r - 1].pow(2).sum() / S.pow(2).sum() < 0.9


def test_rank_arguments_checked():
    W, _ = _data()
    with pytest.raises(ValueError, match="exactly one"):
        truncated_svd(W, rank=4, energy=0.9)
    with pytest.raises(ValueError, match="rank 200"):
        truncated_svd(W, rank=200)


def test_activation_aware_lowers_output_error():
    W, X = _data()
    ref = X @ W.T

    def out_err(up, down):
        return (X @ (up @ down).T - ref).pow(2).sum().item()

    plain = out_err(*truncated_svd(W, rank=16)[:2])
    whitened = out_err(*whitened_svd(W, X.T @ X, rank=16)[:2])
    scaled = out_err(*asvd(W, X.abs().mean(dim=0), rank=16)[:2])
    assert whitened < scaled < plain
    # SVD-LLM's claim: the whitened truncation error is the tail of the whitened spectrum.
    up, down, S = whitened_svd(W, X.T @ X, rank=16, damp=0.0)
    assert out_err(up, down) == pytest.approx(S[16:].double().pow(2).sum().item(), rel=1e-2)


def test_lowrank_linear_matches_product():
    W, _ = _data()
    bias = torch.randn(96)
    up, down, _ = truncated_svd(W, rank=12)
    mod = LowRankLinear(up, down, bias)
    x = torch.randn(5, 128)
    torch.testing.assert_close(mod(x), x @ (up @ down).T + bias)
    assert sum(p.numel() for p in mod.parameters()) == 12 * (96 + 128) + 96


# --- registered stages through compressor.compress --------------------------------------------------

from compressor.engine.compress import compress  # noqa: E402
from tests.helpers import random_tokens, tiny_llama  # noqa: E402


@pytest.mark.parametrize("stage", [{"method": "svd", "rank": 32},
                                   {"method": "svd_llm", "rank": 32},
                                   {"method": "svd_llm", "rank": 32, "scaling": "asvd"}])
def test_stage_factors_layers_and_reports_bytes(stage):
    model = tiny_llama()
    ids = random_tokens(1, 12)
    model, report = compress(model, [stage], calibration=random_tokens(4, 32))
    mods = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    assert len(mods) == 14 and all(m.rank == 32 for m in mods)
    row = next(r for r in report.layers if r.name.endswith("layers.0.mlp.down_proj"))  # 128 x 256
    assert row.extra["params_after"] == 32 * (128 + 256)
    assert row.bytes_after == 32 * (128 + 256) * 4 and row.bytes_before == 128 * 256 * 4
    assert report.weight_bytes_after < report.weight_bytes_before
    assert model(ids).logits.isfinite().all()


def test_stage_leaves_layer_dense_when_factoring_is_larger():
    model, report = compress(tiny_llama(), [{"method": "svd", "energy": 1.0}])
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert all(r.extra.get("kept_dense") for r in report.layers)
    assert report.weight_bytes_after == report.weight_bytes_before


def test_svd_llm_scaling_can_be_overridden_per_module():
    from compressor import compress
    from tests.helpers import random_tokens, tiny_llama

    stage = {"method": "svd_llm", "rank": 32, "targets": r"mlp\.", "overrides": [{"pattern": "down_proj",
                                                                                   "scaling": "asvd"}]}
    _, report = compress(tiny_llama(), [stage], calibration=random_tokens(4, 32))
    used = {r.name.rsplit(".", 1)[-1]: r.extra["scaling"] for r in report.layers}
    assert used == {"gate_proj": "whiten", "up_proj": "whiten", "down_proj": "asvd"}
