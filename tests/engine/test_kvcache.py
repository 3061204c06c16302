"""KV-cache compression: round trips, flush schedule, generate() with every cache, memory, GEAR vs KIVI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from compressor.engine import kvcache as kc
from compressor.engine.methods.kv import GearConfig, KiviConfig, StreamingConfig
from compressor.engine.recipe import Recipe
from compressor.errors import RecipeError
from compressor.models.loading import DEMO_DIR
from tests.helpers import random_tokens, tiny_llama

CACHES = [kc.FP16, KiviConfig(bits=8, residual=0), KiviConfig(bits=4, group_size=32, residual=8),
          KiviConfig(bits=2, group_size=32, residual=0), GearConfig(bits=2, group_size=32, residual=8, chunk=32),
          StreamingConfig(sinks=4, window=12)]


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 10 * math.log10(x.pow(2).sum().item() / (x - x_hat).pow(2).sum().item())


@pytest.mark.parametrize("bits,min_db", [(8, 40.0), (4, 17.0), (2, 5.0)])
@pytest.mark.parametrize("axis", [kc.KEY_AXIS, kc.VALUE_AXIS])
def test_roundtrip_error_bound(bits, min_db, axis):
    x = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(bits))  # (B, H, T, D)
    q = kc.QuantizedKV.quantize(x, bits, 32, axis)
    x_hat = q.dequantize(torch.float32)
    # Each element is off by at most half a step of its group (plus fp16 rounding of scale and zero).
    step = q.scales.float().repeat_interleave(32, dim=-1).movedim(-1, axis)  # x's layout
    assert ((x - x_hat).abs() <= 0.5 * step * 1.01 + 1e-3).all()
    assert sqnr_db(x, x_hat) > min_db


def test_flush_schedule_and_exact_window():
    G, R = 32, 16
    layer = kc.make_layer(KiviConfig(bits=2, group_size=G, residual=R), head_dim=32)
    x = torch.randn(2, 1, 2, 100, 32, generator=torch.Generator().manual_seed(0))  # (kv, B, H, T, D)
    layer.update(x[0, ..., :40, :], x[1, ..., :40, :])  # prompt
    for t in range(40, 100):
        layer.update(x[0, ..., t : t + 1, :], x[1, ..., t : t + 1, :])
    assert layer.get_seq_length() == 100
    assert R <= layer.keys.shape[-2] < R + G and layer.values.shape[-2] == R
    assert sum(c.tokens for c in layer.key_chunks) + layer.keys.shape[-2] == 100
    k, v = layer.materialize()
    assert k.shape == v.shape == (1, 2, 100, 32)
    # The most recent R tokens are the fp16 originals; older ones are 2-bit approximations.
    torch.testing.assert_close(v[..., -R:, :], x[1, ..., -R:, :].half().float())
    assert 0 < (k[..., :64, :] - x[0, ..., :64, :]).abs().max() < 2.0


@pytest.mark.parametrize("cfg", CACHES, ids=lambda c: f"{c.method}{getattr(c, 'bits', '')}")
def test_generate_with_each_cache(cfg):
    model = tiny_llama(hidden=128, layers=2)
    prompt = random_tokens(2, 10)
    ref = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    cache = kc.make_cache(model, cfg)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                         past_key_values=cache)
    assert out.shape == ref.shape and torch.equal(out[:, :10], prompt)
    assert cache.get_seq_length() == 21  # the last generated token is never fed back
    assert kc.cache_nbytes(cache) > 0
    if cfg.method in ("fp16",) or getattr(cfg, "bits", 0) == 8:
        assert torch.equal(out, ref)
    if cfg.method == "streaming":
        assert cache.layers[0].keys.shape[-2] == cfg.sinks + cfg.window


def test_streaming_keeps_sinks_and_window():
    layer = kc.make_layer(StreamingConfig(sinks=2, window=5))
    x = torch.randn(1, 1, 20, 8)
    for t in range(20):
        layer.update(x[..., t : t + 1, :], x[..., t : t + 1, :])
    kept = torch.cat([x[..., :2, :], x[..., 15:, :]], dim=-2).half()
    assert torch.equal(layer.keys, kept) and layer.get_seq_length() == 20
    assert layer.get_mask_sizes(1) == (8, 13)  # 7 stored + 1 new, offset = seen - stored


def test_kv_cache_in_generate_hook_restores_generate():
    model = tiny_llama(hidden=128, layers=2)
    prompt = random_tokens(1, 8)
    cfg = KiviConfig(bits=2, group_size=32, residual=0)
    explicit = model.generate(prompt, max_new_tokens=40, do_sample=False, past_key_values=kc.make_cache(model, cfg))
    with kc.kv_cache_in_generate(model, cfg):
        hooked = model.generate(prompt, max_new_tokens=40, do_sample=False)
    assert torch.equal(hooked, explicit)
    assert "generate" not in vars(model)


def test_fp16_cache_perplexity_matches_full_forward():
    model = tiny_llama(hidden=128, layers=2)
    tokens = random_tokens(2, 48)
    with torch.no_grad():
        logits = model(tokens).logits[:, :-1]  # (B, T-1, V)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    res = kc.kv_perplexity(model, tokens, kc.FP16)
    assert res["tokens"] == 2 * 47
    assert abs(res["ppl"] - math.exp(nll.item())) / res["ppl"] < 1e-3
    # layers x (K, V) x tokens (the last one is scored, never fed) x hidden x fp16 x batch
    assert res["kv_bytes"] == 2 * 2 * 47 * 128 * 2 * 2
    low = kc.kv_perplexity(model, tokens, KiviConfig(bits=2, group_size=32, residual=0))
    assert low["kv_bytes"] < res["kv_bytes"] and len(low["ppl_by_position"]) == 4


def test_two_bit_bytes_per_token_at_most_a_fifth_of_fp16():
    shapes = dict(num_layers=1, num_kv_heads=2, head_dim=128, context=1024)
    fp16 = kc.kv_bytes_per_token(kc.FP16, **shapes)
    assert fp16 == 2 * 2 * 128 * 2  # K and V, heads x head_dim, 2 bytes
    cfg = KiviConfig(bits=2, group_size=64, residual=32)
    two = kc.kv_bytes_per_token(cfg, **shapes)
    assert two <= 0.2 * fp16, f"2-bit KV is {two / fp16:.3f}x of fp16"
    # The residual window is in the count: the same cache with no window is smaller.
    assert kc.kv_bytes_per_token(KiviConfig(bits=2, group_size=64, residual=0), **shapes) < two


def _capture_qkv(model, tokens, layer_idx=1):
    """Queries (after RoPE), keys and values of one attention layer on `tokens`."""
    attn = model.model.layers[layer_idx].self_attn
    seen = {}
    hook = attn.q_proj.register_forward_hook(lambda m, i, o: seen.setdefault("q", o))
    try:
        cache = DynamicCache()
        with torch.no_grad():
            hidden = model.model.embed_tokens(tokens)
            pos = torch.arange(tokens.shape[1])[None]
            cos, sin = model.model.rotary_emb(hidden, pos)
            model(tokens, past_key_values=cache)
    finally:
        hook.remove()
    B, T = tokens.shape
    q = seen["q"].view(B, T, -1, attn.head_dim).transpose(1, 2)  # (B, nh, T, hd)
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    k, v = cache.layers[layer_idx].keys, cache.layers[layer_idx].values  # (B, kvh, T, hd)
    return q, k, v, attn.num_key_value_groups


def _attention(q, k, v, groups):
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_gear_two_bit_beats_plain_two_bit_on_attention_output():
    model = tiny_llama(hidden=256, heads=4, layers=2)
    q, k, v, groups = _capture_qkv(model, random_tokens(1, 128, seed=3))
    ref = _attention(q, k, v, groups)
    errors = {}
    for cfg in (KiviConfig(bits=2, group_size=32, residual=0),
                GearConfig(bits=2, group_size=32, residual=0, rank=4, outliers=2.0, chunk=64)):
        layer = kc.make_layer(cfg, head_dim=k.shape[-1])
        layer.lazy_initialization(k, v)
        layer.store(k, v)
        k_hat, v_hat = layer.materialize()
        errors[cfg.method] = (_attention(q, k_hat, v_hat, groups) - ref).pow(2).mean().item()
    assert errors["gear"] < 0.7 * errors["kivi"], errors


@pytest.mark.skipif(not (DEMO_DIR / "model.safetensors").exists(), reason="demo model not bundled")
def test_demo_model_8bit_cache_greedy_equals_full_precision():
    from compressor.models.loading import load_model

    model, tok = load_model("demo")
    prompts = json.loads((DEMO_DIR.parent.parent / "eval" / "prompts.json").read_text())["prompts"][:3]
    for text in prompts:
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        kw = dict(max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
        ref = model.generate(ids, **kw)
        for cfg in (KiviConfig(bits=8, group_size=32, residual=0), GearConfig(bits=2, residual=0, chunk=32)):
            out = model.generate(ids, past_key_values=kc.make_cache(model, cfg), **kw)
            assert out.shape == ref.shape
            if cfg.method == "kivi":
                assert torch.equal(out, ref), (text, tok.decode(out[0]), tok.decode(ref[0]))


def test_recipe_stage_combines_with_weight_stage_and_attaches():
    recipe = Recipe.from_dict({"stages": [{"method": "rtn", "bits": 4, "group_size": 128},
                                          {"method": "kivi", "bits": 2, "group_size": 32, "residual": 64}]})
    assert [s.method for s in recipe.stages] == ["rtn", "kivi"]
    assert Recipe.from_json(recipe.to_json()).to_dict() == recipe.to_dict()
    model = tiny_llama(hidden=128, layers=2)
    from compressor.engine.compress import compress

    compress(model, Recipe.from_dict([{"method": "gear", "bits": 2, "group_size": 32, "rank": 2}]))
    assert model.kv_cache_config.method == "gear"
    assert isinstance(kc.kv_cache_for(model).layers[0], kc.QuantizedLayer)


@pytest.mark.parametrize("stage,field", [({"method": "kivi", "bits": 3}, "bits"),
                                         ({"method": "kivi", "group_size": 12}, "group_size"),
                                         ({"method": "kivi", "residual": -1}, "residual"),
                                         ({"method": "gear", "chunk": 48}, "chunk"),
                                         ({"method": "gear", "outliers": 80}, "outliers"),
                                         ({"method": "streaming", "window": 0}, "window")])
def test_bad_stage_values_name_the_field(stage, field):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(stage)
    assert e.value.field == field


def test_group_size_must_divide_head_dim():
    model = tiny_llama(hidden=128, heads=4, layers=1)  # head_dim 32
    with pytest.raises(RecipeError, match="head_dim 32"):
        kc.make_cache(model, KiviConfig(bits=2, group_size=64))


def test_demo_model_8bit_cache_survives_flushes_with_bos_and_padding():
    # Regression: the BOS token's value vector is constant in some heads; its group had zero range, the
    # fp16 scale underflowed to 0 and the zero became NaN once the window flushed into the store.
    from compressor.measure.evaluate import greedy_generate
    from compressor.models.loading import load_model

    model, tok = load_model("demo")
    prompts = json.loads((DEMO_DIR.parent.parent / "eval" / "prompts.json").read_text())["prompts"]
    ref = greedy_generate(model, tok, prompts, max_new_tokens=40)  # BOS added, batch left-padded
    with kc.kv_cache_in_generate(model, KiviConfig(bits=8, group_size=32, residual=16)):
        out = greedy_generate(model, tok, prompts, max_new_tokens=40)
    assert out == ref


def test_kv_stage_survives_save_and_load(tmp_path):
    from compressor.engine.compress import compress
    from compressor.engine.serialize import load_compressed, save_compressed

    model = tiny_llama(hidden=128, layers=2)
    compress(model, Recipe.from_dict([{"method": "rtn", "bits": 4, "group_size": 128},
                                      {"method": "kivi", "bits": 2, "group_size": 32, "residual": 16}]))
    save_compressed(model, None, tmp_path / "m")
    back = load_compressed(tmp_path / "m")
    assert back.kv_cache_config.to_dict() == model.kv_cache_config.to_dict()
