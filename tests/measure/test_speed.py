"""Speed, KV bytes and peak memory measured on a tiny Llama."""

import torch

from compressor.measure.speed import kv_bytes_per_token_from_config, measure_speed, peak_memory
from tests.helpers import tiny_llama


def test_speed_and_kv_bytes_on_a_tiny_model():
    model = tiny_llama(kv_heads=2)
    res = measure_speed(model, 256, prompt_tokens=16, new_tokens=4, batches=(1, 2), repeats=2)
    for b in ("1", "2"):
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"):
            s = res["by_batch"][b][key]
            assert s["min"] <= s["median"] <= s["max"] and s["n"] == 2
    # 2 layers x 2 kv heads x head_dim 32 x (K, V) x 4 bytes, from the config and from the real cache
    assert kv_bytes_per_token_from_config(model.config) == 2 * 2 * 32 * 2 * 4
    assert res["kv_bytes_per_token_measured"] == 2 * 2 * 32 * 2 * 4
    assert res["peak_memory_bytes"] > 0


def test_peak_memory_sees_an_allocation():
    with peak_memory("cpu") as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x += 1
        del x
    assert mem["peak_memory_delta_bytes"] >= 48 * 2**20
