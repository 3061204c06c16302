"""Budgets: the three written forms, their errors, and the bytes each one leaves for the weights."""

from __future__ import annotations

import pytest

from compressor.errors import LabError
from compressor.fit.allocator import allocate
from compressor.fit.budget import float_bytes_for, parse_budget, weight_budget_bytes
from compressor.fit.fitting import fit_map
from compressor.measure.hardware import get_profile
from tests.fit.test_allocator import synthetic_map


@pytest.mark.parametrize("text,kind,value", [("3.5bits", "bits", 3.5), ("4 bits", "bits", 4.0),
                                             ("1.5GiB", "bytes", int(1.5 * 2**30)), ("800MB", "bytes", 800 * 10**6),
                                             ("hardware:t4", "hardware", "t4")])
def test_the_written_forms(text, kind, value):
    b = parse_budget(text)
    assert (b.kind, b.value) == (kind, value)


@pytest.mark.parametrize("text,match", [("", "empty"), ("lots", "not understood"), ("1bits", "outside"),
                                        ("hardware:", "names no profile"), ("0GiB", "not a positive size")])
def test_a_bad_budget_says_how_to_write_one(text, match):
    with pytest.raises(LabError, match=match):
        parse_budget(text)


def test_context_and_batch_must_be_positive():
    with pytest.raises(LabError, match="context=0"):
        parse_budget("hardware:t4", context=0)


def test_a_bits_budget_bounds_the_average_bits_of_the_quantizable_modules():
    smap = synthetic_map(3)
    budget, _ = weight_budget_bytes(parse_budget("3.5bits"), smap, 4)
    a = allocate(smap, budget, 4, curve=False)
    stored = a.bytes - smap.fixed_float_params * 4
    assert 8 * stored / sum(m.params for m in smap.modules) <= 3.5


def test_a_hardware_budget_is_usable_memory_less_overhead_and_the_kv_cache_in_16_bits():
    smap = synthetic_map(2)
    b = parse_budget("hardware:t4", context=1024, batch=8)
    fb = float_bytes_for(b, smap)
    t4 = get_profile("t4")
    budget, detail = weight_budget_bytes(b, smap, fb)
    assert fb == 2
    assert budget == int(t4.memory_bytes * t4.usable_memory_fraction) - t4.runtime_overhead_bytes - 8 * 1024 * 64 * 2
    assert detail["kv_cache"] == 8 * 1024 * 64 * 2


def test_a_kv_cache_larger_than_the_memory_leaves_no_room_and_says_so():
    smap = synthetic_map(2)
    smap.kv_values_per_token = 10**6
    with pytest.raises(LabError, match="shorter context or a smaller batch"):
        fit_map(smap, parse_budget("hardware:t4", context=8192, batch=64))


def test_a_budget_above_the_float_model_needs_no_recipe():
    result = fit_map(synthetic_map(2), parse_budget("1GiB"))
    assert result.recipe is None and "fits as it is" in result.summary() and result.recipe_yaml == ""
