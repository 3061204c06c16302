"""Pruning: mask exactness, N:M groups, SparseGPT reconstruction, compact 2:4, structured removal."""

from __future__ import annotations

import pytest
import torch

from compressor.engine.methods.prune_magnitude import magnitude_mask
from compressor.engine.methods.prune_structured import kv_group_scores, prune_kv_groups, prune_mlp_channels
from compressor.engine.methods.sparsegpt import sparsegpt_prune
from compressor.engine.methods.wanda import wanda_mask
from compressor.engine.sparsity import (
    Sparse24Linear,
    nm_mask,
    pack_24,
    satisfies_nm,
    unpack_24,
    zero_fraction,
)
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
    if name in ("wanda", "wanda-layer"):
        per_output = name == "wanda"
        return W.masked_fill(wanda_mask(W, X.norm(dim=0), sparsity, prune_n=n, prune_m=m, per_output=per_output), 0)
    return sparsegpt_prune(W, X.T @ X, sparsity, prune_n=n, prune_m=m)[0]


METHODS = ["magnitude", "wanda", "sparsegpt"]


@pytest.mark.parametrize("method", [*METHODS, "wanda-layer"])
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


# --- registered stages through compressor.compress --------------------------------------------------

from compressor.engine.compress import compress  # noqa: E402
from compressor.engine.methods.prune_structured import StructuredConfig  # noqa: E402
from compressor.engine.recipe import RecipeError  # noqa: E402


def _linears(model):
    return {n: m for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_stage_prunes_every_target(method, pattern):
    model = tiny_llama()
    stage = {"method": method, "sparsity": 0.6, "pattern": pattern}
    model, report = compress(model, [stage], calibration=random_tokens(4, 32))
    target = 0.6 if pattern == "unstructured" else 0.5
    assert abs(report.sparsity - target) <= 0.005
    for name, lin in _linears(model).items():
        assert abs(zero_fraction(lin.weight) - target) <= 0.005, name
        if pattern == "2:4":
            assert satisfies_nm(lin.weight, 2, 4), name
    # Honest accounting: zeros stored densely save nothing, and the report says so.
    assert report.weight_bytes_after == report.weight_bytes_before
    assert "no memory or speed saving" in report.layers[0].extra["savings"]
    assert report.sanity["finite_logits"]


def test_compact_24_storage_saves_bytes_and_matches_dense():
    model = tiny_llama()
    calib = random_tokens(4, 32)
    dense, _ = compress(tiny_llama(), [{"method": "wanda", "pattern": "2:4"}], calibration=calib)
    model, report = compress(model, [{"method": "wanda", "pattern": "2:4", "storage": "compact"}], calibration=calib)
    assert all(isinstance(m, Sparse24Linear) for n, m in model.model.layers.named_modules() if n.endswith("proj"))
    assert report.compressed_bytes_after / report.compressed_bytes_before == pytest.approx(0.53125)
    ids = random_tokens(1, 16)
    torch.testing.assert_close(model(ids).logits, dense(ids).logits)


def test_bad_pattern_and_storage_are_recipe_errors():
    with pytest.raises(RecipeError, match="pattern='3:3'"):
        compress(tiny_llama(), [{"method": "magnitude", "pattern": "3:3"}])
    with pytest.raises(RecipeError, match="storage='compact'"):
        compress(tiny_llama(), [{"method": "magnitude", "pattern": "4:8", "storage": "compact"}])


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_structured_stage_shrinks_model_and_generate_works(kv_heads):
    model = tiny_llama(heads=4, kv_heads=kv_heads, intermediate=256)
    cfg = StructuredConfig(heads_fraction=0.5, mlp_fraction=0.5, overrides=[{"pattern": r"layers\.1\.", "skip": True}])
    model, report = compress(model, cfg, calibration=random_tokens(4, 32))
    attn0, attn1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    hd = attn0.head_dim
    assert attn0.k_proj.out_features == kv_heads // 2 * hd and attn0.q_proj.out_features == 2 * hd
    assert attn1.q_proj.out_features == 4 * hd  # skipped layer untouched
    assert model.model.layers[0].mlp.down_proj.in_features == 128
    assert model.config.pruned_layout["num_attention_heads"] == [2, 4]
    assert model.config.pruned_layout["intermediate_size"] == [128, 256]
    assert report.weight_bytes_after < report.weight_bytes_before
    out = model.generate(random_tokens(1, 5), max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 11)


def _rows_that_matter_downstream(model):
    """Make a quarter of each MLP's intermediate rows tiny in gate/up but dominant through down_proj:
    a whole-matrix ("layer") comparison prunes those rows away entirely, a per-row one keeps half."""
    with torch.no_grad():
        for layer in model.model.layers:
            q = layer.mlp.gate_proj.out_features // 4
            layer.mlp.gate_proj.weight[:q] *= 0.01
            layer.mlp.up_proj.weight[:q] *= 0.01
            layer.mlp.down_proj.weight[:, :q] *= 1e5
    return model


@pytest.mark.parametrize("construct, expected", [(_rows_that_matter_downstream, "output"), (lambda m: m, None)])
def test_wanda_auto_comparison_keeps_the_group_with_smaller_layer_output_error(construct, expected):
    calib = random_tokens(4, 32)
    stage = {"method": "wanda", "sparsity": 0.5, "targets": r"mlp\.(gate|up)_proj"}
    auto, report = compress(construct(tiny_llama()), [stage], calibration=calib)
    rows = [r for r in report.layers if r.extra.get("comparison")]
    assert len(rows) == 4
    for r in rows:
        errors = r.extra["auto_output_error"]
        assert r.extra["comparison"] == min(errors, key=errors.get)
        if expected:
            assert r.extra["comparison"] == expected
            assert errors["layer"] > 2 * errors["output"]
    # The kept masks are exactly those of the chosen fixed group.
    chosen = rows[0].extra["comparison"]
    fixed, _ = compress(construct(tiny_llama()), [{**stage, "comparison": chosen}], calibration=calib)
    for (name, a), b in zip(_linears(auto).items(), _linears(fixed).values(), strict=True):
        assert torch.equal(a.weight, b.weight), name


def test_magnitude_per_output_comparison_prunes_each_row_equally():
    W = torch.randn(64, 128) * torch.linspace(0.1, 3, 64).reshape(-1, 1)  # rows of very different scale
    per_row = magnitude_mask(W, 0.5, per_output=True)
    assert (per_row.sum(dim=1) == 64).all()
    per_layer = magnitude_mask(W, 0.5)
    assert per_layer.sum() == W.numel() // 2 and per_layer[0].sum() > per_layer[-1].sum()
