"""The svd_llm stage factors each layer by the whitened SVD of its real calibration inputs
(not plain SVD), so its output error on those inputs is below plain SVD's at the same rank."""

from __future__ import annotations

import copy

import torch

from compressor.engine.compress import compress
from compressor.engine.hessian import HessianAccumulator
from compressor.engine.methods.lowrank import LowRankLinear, asvd, truncated_svd, whitened_svd
from tests.helpers import random_tokens, tiny_llama
from tests.methods.test_pruning_invariants import module_inputs, uneven_mlp_inputs

TARGET = r"layers\.0\.mlp\.(gate|up)_proj"


def _model():
    """tiny_llama whose layer-0 MLP inputs have channel scales spread over two decades."""
    return uneven_mlp_inputs(tiny_llama(intermediate=256))


def _product(mod: LowRankLinear) -> torch.Tensor:
    return (mod.up.weight @ mod.down.weight).detach()  # (N, K)


def test_svd_llm_stage_factors_are_the_whitened_svd_of_the_real_inputs():
    model, calib = _model(), random_tokens(4, 32)
    original = copy.deepcopy(model)
    lin = original.model.layers[0].mlp.up_proj
    X = module_inputs(original, lin, calib).float()
    acc = HessianAccumulator(X.shape[1])
    acc.add(X)
    model, _ = compress(model, [{"method": "svd_llm", "rank": 16, "targets": TARGET}], calibration=calib)
    mod = model.model.layers[0].mlp.up_proj
    assert isinstance(mod, LowRankLinear) and mod.rank == 16
    up, down, _ = whitened_svd(lin.weight, acc.H, rank=16)
    torch.testing.assert_close(_product(mod), up @ down, rtol=1e-3, atol=1e-4)

    ref = X @ lin.weight.T

    def out_err(W_hat):
        return (X @ W_hat.T - ref).pow(2).sum().item()

    plain_up, plain_down, _ = truncated_svd(lin.weight, rank=16)
    assert out_err(_product(mod)) < 0.5 * out_err(plain_up @ plain_down)


def test_svd_llm_asvd_stage_factors_are_asvd_of_the_real_inputs():
    model, calib = _model(), random_tokens(4, 32)
    original = copy.deepcopy(model)
    lin = original.model.layers[0].mlp.gate_proj
    X = module_inputs(original, lin, calib).float()
    stage = {"method": "svd_llm", "rank": 16, "scaling": "asvd", "targets": TARGET}
    model, _ = compress(model, [stage], calibration=calib)
    up, down, _ = asvd(lin.weight, X.abs().mean(dim=0), rank=16)
    torch.testing.assert_close(_product(model.model.layers[0].mlp.gate_proj), up @ down, rtol=1e-3, atol=1e-4)


def test_svd_llm_per_module_scaling_override_is_used():
    """A whitening stage whose override asks gate_proj for ASVD factors gate_proj by ASVD."""
    model, calib = _model(), random_tokens(4, 32)
    original = copy.deepcopy(model)
    lin = original.model.layers[0].mlp.gate_proj
    X = module_inputs(original, lin, calib).float()
    stage = {"method": "svd_llm", "rank": 16, "scaling": "whiten", "targets": TARGET,
             "overrides": [{"pattern": r"gate_proj", "scaling": "asvd"}]}
    model, _ = compress(model, [stage], calibration=calib)
    up, down, _ = asvd(lin.weight, X.abs().mean(dim=0), rank=16)
    torch.testing.assert_close(_product(model.model.layers[0].mlp.gate_proj), up @ down, rtol=1e-3, atol=1e-4)
