"""Hardware profiles as data, and the projection's arithmetic on cases worked by hand."""

import dataclasses

import pytest

from compressor.errors import LabError
from compressor.measure import hardware as hw

REQUIRED = {"t4", "l4", "a10g", "a100-40gb", "a100-80gb", "h100", "h200", "rtx-4090", "rtx-3090", "hf-cpu-basic",
            "laptop-cpu", "apple-m2", "apple-m3"}


def test_every_profile_loads_and_cites_a_source():
    profiles = {p.id: p for p in hw.list_profiles()}
    assert REQUIRED <= set(profiles)
    for p in profiles.values():
        assert p.memory_bytes > 2**30 and p.memory_bandwidth_gb_s > 0
        assert p.default_compute_dtype in p.peak_tflops
        assert {"fp8", "sparse_2_4", "int4_kernels"} <= set(p.features)
        assert len(p.source) > 20 and 0 < p.decode_efficiency <= 1
    assert profiles["h100"].features["fp8"] and not profiles["t4"].features["fp8"]


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(LabError, match="h100"):
        hw.get_profile("h1000")


def _toy(**kw):
    base = dict(id="toy", name="toy", kind="gpu", memory_bytes=10 * 2**30, memory_bandwidth_gb_s=100.0,
                peak_tflops={"fp16": 10.0}, features={"fp8": False, "sparse_2_4": False, "int4_kernels": True},
                default_compute_dtype="fp16", decode_efficiency=0.5, prefill_efficiency=0.5, layer_overhead_us=0.0,
                runtime_overhead_bytes=2**30, usable_memory_fraction=0.9, source="worked example")
    return hw.HardwareProfile(**(base | kw))


def test_projection_arithmetic_on_a_known_case():
    # 1 GB of weights read per token at 100 GB/s x 0.5 efficiency = 20 ms -> 50 tokens/s;
    # compute 2 x 0.5e9 FLOP / (10 TFLOPS x 0.5) = 0.2 ms, so memory-bound.
    m = hw.ModelFacts(weight_bytes=10**9, n_params=5 * 10**8, n_layers=10, kv_bytes_per_token=2**20,
                      max_context=100_000, hidden_size=1024)
    p = hw.project(_toy(), m, context=1000, batch=1)
    assert p["label"] == "projection"
    # KV adds 1000 x 1 MiB = 1.048576 GB read per step: (1e9 + 1.048576e9) / 50e9 s
    assert p["decode_tokens_per_s"] == pytest.approx(50e9 / (1e9 + 1000 * 2**20))
    assert p["decode_bound"] == "memory"
    # usable 9 GiB - 1e9 weights - 1 GiB runtime = room for (8 GiB - 1e9) / 1 MiB tokens of KV
    room = int(0.9 * 10 * 2**30) - 10**9 - 2**30
    assert p["max_context_at_batch_1"] == room // 2**20
    assert p["max_batch_at_context"] == (room // 2**20) // 1000
    assert p["fits"] and p["memory_needed_bytes"] == 10**9 + 1000 * 2**20 + 2**30
    assert not hw.project(_toy(), m, context=9000, batch=1)["fits"]
    # fixed per-layer overhead adds 10 layers x 100 us = 1 ms per step
    q = hw.project(_toy(layer_overhead_us=100.0), dataclasses.replace(m, kv_bytes_per_token=0), context=1)
    assert 1 / q["decode_tokens_per_s"] == pytest.approx(0.02 + 0.001)
    assert "projection" in hw.projection_text(q)


def test_fit_recovers_efficiency_and_overhead():
    bw, eff, over = 20e9, 0.4, 5e-4
    points = [(b, n, b / (bw * eff) + n * over) for b, n in ((1e7, 8), (7e7, 4), (2.4e8, 4))]
    e, o = hw.fit_decode_constants(points, bw)
    assert e == pytest.approx(eff) and o == pytest.approx(over)


def test_warnings_come_from_published_records():
    m = hw.ModelFacts(weight_bytes=10**9, n_params=2 * 10**9, n_layers=24, kv_bytes_per_token=1e5, max_context=4096)
    h100 = hw.get_profile("h100")
    nf4 = hw.project(h100, dataclasses.replace(m, traits=["nf4"]))["warnings"]
    assert any("NF4" in w and "batch 1" in w for w in nf4)
    sparse = hw.project(hw.get_profile("t4"), dataclasses.replace(m, traits=["sparse-2:4"]))["warnings"]
    assert any("2:4" in w and "no 2:4 sparse tensor cores" in w for w in sparse)
    int4 = hw.project(h100, dataclasses.replace(m, traits=["int4-weight-only"]), large_batch=32)["warnings"]
    assert any("batch 32" in w for w in int4)
    assert not any("NF4" in w for w in hw.project(h100, m)["warnings"])
