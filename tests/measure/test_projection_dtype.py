"""GPU projections count floating-point weights at 16 bits (the lab loads fp32 on the CPU, a GPU runs
fp16/bf16), packed integers at their real size; CPU profiles and "this machine" keep the measured bytes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from compressor.engine.compress import compress
from compressor.engine.recipe import load_recipe
from compressor.engine.report import weight_bytes, weight_bytes_at
from compressor.measure import hardware as hw
from compressor.runs.projection import project_report, projection_lines
from tests.helpers import tiny_llama

SIDES = ("baseline", "compressed")


def test_float_weights_count_two_bytes_packed_integers_their_own():
    model = tiny_llama()
    floats = sum(p.numel() for p in model.parameters())
    assert weight_bytes_at(model, 2) == 2 * floats  # fp32 halved; inv_freq is rebuilt, not held

    net, _ = compress(tiny_llama(), load_recipe("int8"))
    net(input_ids=torch.tensor([[1, 2, 3]]))  # the CPU kernel adopts its runtime layout
    packed = {n: b for n, b in net.named_buffers() if not torch.is_floating_point(b)}
    assert packed and all(b.dtype in (torch.uint8, torch.int8, torch.int32) for b in packed.values())
    rest = [t for n, t in list(net.named_parameters()) + list(net.named_buffers())
            if torch.is_floating_point(t) and "native_scale" not in n and "inv_freq" not in n]
    expected = sum(b.numel() * b.element_size() for b in packed.values()) + sum(2 * t.numel() for t in rest)
    assert weight_bytes_at(net, 2) == expected
    assert weight_bytes_at(net, 2) < weight_bytes(net)


def test_gpu_projection_compares_against_a_16_bit_baseline(demo_run):
    r = demo_run.report  # RTN 4-bit on the demo model, projected onto a T4
    p = r.projection
    assert p.float_dtype == "float16 (projected)"
    measured_ratio = r.baseline.weight_bytes / r.compressed.weight_bytes
    projected = {side: r.footprint[side].float16.weight_bytes for side in SIDES}
    assert projected["baseline"] == pytest.approx(r.baseline.weight_bytes / 2, rel=1e-3)
    # fp32 embeddings stay float: against a 16-bit baseline the gain shrinks (it was overstated)
    assert projected["baseline"] / projected["compressed"] < measured_ratio - 0.05
    assert projected["compressed"] < r.compressed.weight_bytes
    kv16 = r.baseline.kv_bytes_per_token / 2
    assert r.footprint["baseline"].float16.kv_bytes_per_token == kv16
    t4 = hw.get_profile("t4")
    assert p.baseline.memory_needed_bytes == int(projected["baseline"] + p.context * kv16 + t4.runtime_overhead_bytes)
    assert all("float16" in line for line in projection_lines(r))


def test_this_machine_projection_keeps_the_measured_bytes(demo_run, monkeypatch):
    cpu = dataclasses.replace(hw.get_profile("laptop-cpu"), id=hw.THIS_MACHINE)  # no probe: seconds saved
    monkeypatch.setattr(hw, "this_machine", lambda *a, **k: cpu)
    r = demo_run.report
    p = project_report(r, hw.THIS_MACHINE, r.request.projection_context, r.request.projection_batch)
    assert p.float_dtype == "float32 (as measured)"
    assert {side: r.footprint[side].measured.weight_bytes for side in SIDES} == \
        {"baseline": r.baseline.weight_bytes, "compressed": r.compressed.weight_bytes}
    assert p.check_against_measured is not None
    need = r.baseline.weight_bytes + p.context * r.baseline.kv_bytes_per_token + cpu.runtime_overhead_bytes
    assert p.baseline.memory_needed_bytes == int(need)
