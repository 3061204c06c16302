"""KV bytes per token from the config agree with the cache a real prefill fills, after structured pruning too."""

import pytest
import torch

from compressor import compress
from compressor.measure.speed import kv_bytes_per_token_from_config, measure_speed
from tests.helpers import random_tokens, tiny_llama

PRUNE = {"method": "structured", "heads_fraction": 0.5, "mlp_fraction": 0.25}


def _measured(model) -> float:
    """Bytes per token of the cache a real prefill (+ decode) filled: the path measure_speed reports."""
    res = measure_speed(model, model.config.vocab_size, prompt_tokens=16, new_tokens=2, batches=(1,), repeats=1)
    return res["kv_bytes_per_token_measured"]


@pytest.mark.parametrize(("recipe", "kv_heads"), [
    (None, [2, 2]),
    ([PRUNE], [1, 1]),  # one of the two KV groups removed in every layer
    ([{**PRUNE, "overrides": [{"pattern": r"layers\.1\.", "heads_fraction": 0.0}]}], [1, 2]),  # layer 0 only
], ids=["dense", "pruned", "pruned-layer-0"])
def test_config_formula_matches_a_real_prefill_cache(recipe, kv_heads):
    model = tiny_llama(heads=4, kv_heads=2)
    if recipe is not None:
        model, _ = compress(model, recipe, calibration=random_tokens(4, 32))
        assert model.config.pruned_layout["num_key_value_heads"] == kv_heads
    assert [layer.self_attn.k_proj.out_features // 32 for layer in model.model.layers] == kv_heads
    formula = kv_bytes_per_token_from_config(model.config, next(model.parameters()).dtype)
    assert formula == sum(kv_heads) * 32 * 2 * 4  # heads x head_dim x (K, V) x fp32 bytes
    assert formula == _measured(model)


def test_a_layout_that_does_not_fit_the_config_is_refused():
    config = tiny_llama(heads=4, kv_heads=2).config
    config.pruned_layout = {"num_key_value_heads": [1, 1, 1]}
    with pytest.raises(ValueError, match="3 layers .* num_hidden_layers 2"):
        kv_bytes_per_token_from_config(config, torch.float32)


def test_compressed_kv_bytes_follow_the_per_layer_heads_too():
    from compressor.engine.kvcache import FP16, model_kv_bytes_per_token

    model = tiny_llama(heads=4, kv_heads=2)
    dense = model_kv_bytes_per_token(model, FP16, context=64)
    model, _ = compress(model, [{**PRUNE, "overrides": [{"pattern": r"layers\.1\.", "heads_fraction": 0.0}]}],
                        calibration=random_tokens(4, 32))
    assert model_kv_bytes_per_token(model, FP16, context=64) == pytest.approx(dense * 3 / 4)  # KV heads [1, 2] of [2, 2]
