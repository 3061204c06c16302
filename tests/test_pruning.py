"""Pruning: mask exactness, N:M groups, SparseGPT reconstruction, compact 2:4, structured removal."""

from __future__ import annotations

import pytest
import torch

from compressor.methods.prune_magnitude import magnitude_mask
from compressor.methods.prune_structured import kv_group_scores, prune_kv_groups, prune_mlp_channels
from compressor.methods.sparsegpt import sparsegpt_prune
from compressor.methods.wanda import wanda_mask
from compressor.sparsity import Sparse24Linear, nm_mask, pack_24, satisfies_nm, unpack_24, zero_fraction
from tests.helpers import random_tokens, tiny_llama


def _layer_data(N=128, K=256, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g)
    # Inputs with very unequal channel scales: where activation-aware pruning differs from magnitude.
    X = torch.randn(n, K, generator=g) * torch.logspace(-1, 1, K)[torch.randperm(K, generator=g)]
    return W, X


def _prune(name, W, X, sparsity=0.5, n=0, m=0):
    if name == "magnitude":
        return W.masked_fill(magnitude_mask(W, sparsity, prune_n=n, prune_m=m), 0)
    if name == "wanda":
        return W.masked_fill(wanda_mask(W, X.norm(dim=0), sparsity, prune_n=n, prune_m=m), 0)
    return sparsegpt_prune(W, X.T @ X, sparsity, prune_n=n, prune_m=m)[0]


METHODS = ["magnitude", "wanda", "sparsegpt"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_unstructured_sparsity_matches_target(method, sparsity):
    W, X = _layer_data()
    assert abs(zero_fraction(_prune(method, W, X, sparsity)) - sparsity) <= 0.005


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_every_group_has_n_zeros(method, n, m):
    W, X = _layer_data()
    Wp = _prune(method, W, X, n=n, m=m)
    assert satisfies_nm(Wp, n, m)
    assert abs(zero_fraction(Wp) - n / m) <= 0.005


def test_satisfies_nm_can_fail():
    W = torch.ones(4, 8)
    W[:, 0] = 0
    assert not satisfies_nm(W, 2, 4)


def test_activation_aware_beats_magnitude_on_output_error():
    W, X = _layer_data()
    ref = X @ W.T
    err = {m: (X @ _prune(m, W, X).T - ref).pow(2).sum().item() for m in METHODS}
    assert err["wanda"] < err["magnitude"]
    assert err["sparsegpt"] < err["wanda"]  # the OBS update reconstructs what the mask removed


def test_nm_mask_rejects_bad_pattern():
    with pytest.raises(ValueError, match="N:M"):
        nm_mask(torch.randn(4, 8), 4, 4)
    with pytest.raises(ValueError, match="divide in_features"):
        nm_mask(torch.randn(4, 6), 2, 4)


def test_pack_24_roundtrip_and_bytes():
    W, X = _layer_data()
    Wp = _prune("wanda", W, X, n=2, m=4)
    Wp[0, :4] = torch.tensor([0.0, 0.0, 0.0, 1.5])  # a group with only one nonzero
    values, meta = pack_24(Wp)
    assert values.shape == (128, 128) and meta.shape == (128, 32) and meta.dtype == torch.uint8
    assert torch.equal(unpack_24(values, meta), Wp)
    lin = torch.nn.Linear(256, 128)
    lin.weight.data.copy_(Wp)
    sp = Sparse24Linear.from_linear(lin)
    x = torch.randn(3, 256)
    torch.testing.assert_close(sp(x), lin(x))
    dense_bytes = lin.weight.numel() * 4
    packed_bytes = sum(b.numel() * b.element_size() for b in sp.buffers())
    assert packed_bytes / dense_bytes == pytest.approx(0.53125)
    with pytest.raises(ValueError, match="not 2:4"):
        pack_24(W)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_structured_removal_shrinks_and_generates(kv_heads):
    model = tiny_llama(hidden=128, intermediate=256, heads=4, kv_heads=kv_heads)
    layer = model.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    x_sq = torch.rand(attn.o_proj.in_features)
    scores = kv_group_scores(attn.o_proj.weight, x_sq, kv_heads, attn.head_dim)
    assert scores.shape == (kv_heads,)
    prune_kv_groups(attn, torch.tensor([kv_heads - 1]))
    prune_mlp_channels(mlp, torch.arange(0, 256, 2))
    hd = attn.head_dim
    assert attn.q_proj.weight.shape == (4 // kv_heads * hd, 128)
    assert attn.k_proj.weight.shape == (hd, 128) and attn.o_proj.weight.shape == (128, 4 // kv_heads * hd)
    assert mlp.gate_proj.weight.shape == (128, 128) and mlp.down_proj.weight.shape == (128, 128)
    out = model.generate(random_tokens(1, 5), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_removing_kv_groups_equals_zeroing_their_heads(kv_heads):
    """Cutting a group out must compute exactly what the full layer computes with that group silenced."""
    model = tiny_llama(hidden=128, heads=4, kv_heads=kv_heads, layers=1)
    ids = random_tokens(2, 7)
    attn = model.model.layers[0].self_attn
    keep = torch.tensor([0])
    cols = attn.o_proj.in_features // kv_heads  # o_proj columns of one group
    with torch.no_grad():
        attn.o_proj.weight[:, cols:] = 0
        ref = model(ids).logits
        prune_kv_groups(attn, keep)
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-5, rtol=1e-5)
