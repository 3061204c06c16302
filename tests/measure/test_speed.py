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


def test_batch_one_decode_runs_on_one_cpu_thread_and_the_count_is_restored():
    """M = 1 decode steps run on DECODE_THREADS (1) for every model alike; prefill and batch-8 decode keep
    torch's count, which is restored after each decode loop."""
    model = tiny_llama(kv_heads=2)
    seen = []  # (tokens in this forward, batch, threads) for every forward of the model
    model.register_forward_pre_hook(lambda m, args, kw: seen.append(
        (kw["input_ids"].shape[1], kw["input_ids"].shape[0], torch.get_num_threads())), with_kwargs=True)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = measure_speed(model, model.config.vocab_size, prompt_tokens=8, new_tokens=3, batches=(1, 8), repeats=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert res["decode_threads"] == 1
    assert {t for n, b, t in seen if n == 1 and b == 1} == {1}  # batch-1 decode steps
    assert {t for n, b, t in seen if n == 8} == {2} and {t for n, b, t in seen if n == 1 and b == 8} == {2}
